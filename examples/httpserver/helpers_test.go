package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/internal/redistest"
)

// One real redis-server serves the whole package, started on first use;
// each test has a key prefix of its own. TestMain stops it.
var shared struct {
	once sync.Once
	srv  *redistest.Server
	err  error
}

func redisAddr(t *testing.T) string {
	t.Helper()
	shared.once.Do(func() { shared.srv, shared.err = redistest.Start(redistest.Options{}) })
	if shared.err != nil {
		if errors.Is(shared.err, redistest.ErrNotInstalled) && !redistest.Required() {
			t.Skipf("needs redis-server: %v", shared.err)
		}
		t.Fatalf("starting redis-server: %v", shared.err)
	}
	return shared.srv.Addr
}

var prefixes atomic.Int64

func testPrefix() string {
	return fmt.Sprintf("httpserver-test-%d-%s:", prefixes.Add(1), uuid.NewString()[:8])
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// instance is one instance of the service on the shared redis-server: its
// own Redis client, Exporter (configured as main configures it) and
// httptest.Server.
type instance struct {
	exp *exporter.Exporter
	svc *service
	ts  *httptest.Server
}

// newInstance starts an instance under a key prefix of its own, whose
// event streams send a heartbeat every heartbeat (0: the default). cfg
// may set what main sets from flags; the rest is main's. It is shut down
// when the test ends; an export still running then makes the Exporter's
// Shutdown, and the test, fail.
func newInstance(t *testing.T, heartbeat time.Duration, cfg exporter.Config) *instance {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: redisAddr(t), ContextTimeoutEnabled: true})
	cfg.AdminPermission = adminPermission
	cfg.Sources = sources()
	cfg.Logger = testLogger(t)
	exp, err := exporter.New(exporter.NewRedisStore(client).WithPrefix(testPrefix()), cfg)
	require.NoError(t, err)
	svc, err := newService(exp, cfg.Logger, heartbeat)
	require.NoError(t, err)
	ts := httptest.NewUnstartedServer(svc)
	ts.Config.RegisterOnShutdown(svc.CloseStreams)
	ts.Start()
	t.Cleanup(func() {
		svc.CloseStreams()
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := exp.Shutdown(ctx)
		client.Close()
		require.NoError(t, err, "exports were still running when the test ended")
	})
	return &instance{exp: exp, svc: svc, ts: ts}
}

// reply is a response, read in full.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// call sends a request as user (the X-User header; "" for none) with body
// (sent as JSON when not empty) and headers as name, value pairs, which
// override the defaults. It does not follow redirects.
func (in *instance) call(t *testing.T, method, path, user, body string, headers ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, in.ts.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if user != "" {
		req.Header.Set("X-User", user)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	client := &http.Client{
		Transport:     in.ts.Client().Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return reply{status: resp.StatusCode, header: resp.Header, body: data}
}

// job decodes r as a job.
func (r reply) job(t *testing.T) *exporter.Job {
	t.Helper()
	require.Equal(t, "application/json", r.header.Get("Content-Type"), "body %s", r.body)
	var job exporter.Job
	require.NoError(t, json.Unmarshal(r.body, &job), "body %s", r.body)
	return &job
}

// problem is the part of an RFC 9457 problem document the tests read.
type problem struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

// requireProblem checks that r is a problem document of status and code,
// and returns it.
func (r reply) requireProblem(t *testing.T, status int, code string) problem {
	t.Helper()
	require.Equal(t, status, r.status, "body %s", r.body)
	require.Equal(t, "application/problem+json", r.header.Get("Content-Type"), "body %s", r.body)
	var p problem
	require.NoError(t, json.Unmarshal(r.body, &p), "body %s", r.body)
	require.Equal(t, status, p.Status)
	require.Equal(t, code, p.Code)
	require.NotEmpty(t, p.Title)
	return p
}

// start starts an export as user with the body of a POST to the API, and
// returns it; the Location must be the export's path under apiPrefix.
func (in *instance) start(t *testing.T, user, body string) *exporter.Job {
	t.Helper()
	r := in.call(t, "POST", apiPrefix+"/", user, body)
	require.Equal(t, http.StatusCreated, r.status, "body %s", r.body)
	job := r.job(t)
	require.Equal(t, apiPrefix+"/"+job.ID, r.header.Get("Location"))
	return job
}

// get returns export id as user sees it through the API.
func (in *instance) get(t *testing.T, user, id string) *exporter.Job {
	t.Helper()
	r := in.call(t, "GET", apiPrefix+"/"+id, user, "")
	require.Equal(t, http.StatusOK, r.status, "body %s", r.body)
	return r.job(t)
}

// waitStatus waits until in reports export id with status, and returns
// it.
func (in *instance) waitStatus(t *testing.T, user, id string, status exporter.Status) *exporter.Job {
	t.Helper()
	var job *exporter.Job
	eventually(t, 20*time.Second, func() bool {
		job = in.get(t, user, id)
		return job.Status == status
	}, "export %s never became %s", id, status)
	return job
}

// eventually checks cond every few milliseconds, in the test's goroutine
// (so cond may use require), until it holds; it fails the test if cond
// does not hold within timeout.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			require.FailNow(t, fmt.Sprintf("condition not met within %v", timeout), msgAndArgs...)
		}
		<-tick.C
	}
}
