package exporterhttp_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/exporterhttp"
	"github.com/exporterkit/exporter/internal/syncbuf"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// typeBase is the start of every problem type.
const typeBase = "https://github.com/exporterkit/exporter/exporterhttp#"

// chunkSize is the Exporter's chunk size in these tests: the smallest, so
// that small exports have several chunks and progress.
const chunkSize = 1024

// backends are the Redis servers every behaviour test runs on: miniredis
// for speed, a real redis-server for truth.
var backends = []string{"miniredis", "redis"}

// forEachBackend runs f once per backend, as parallel subtests.
func forEachBackend(t *testing.T, f func(t *testing.T, e *env)) {
	t.Helper()
	for _, name := range backends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, newEnv(t, name, nil))
		})
	}
}

// adminPermission is the Exporter's Config.AdminPermission in these
// tests; the user "root" holds it.
const adminPermission = "exporter-admin"

// errSourceFailed is what the durable kind "fail" fails with.
var errSourceFailed = errors.New("disk on fire")

// env is a Handler on an Exporter on one backend, mounted at /exports/ of
// an httptest.Server, the way a service mounts it.
type env struct {
	exp   *exporter.Exporter
	store *exporter.RedisStore
	h     *exporterhttp.Handler
	srv   *httptest.Server
	url   string // srv.URL + "/exports"
	gate  *gate
	logs  *syncbuf.Buffer // the Handler's log, as JSON lines
}

// newEnv returns an env on backend; configure, if not nil, changes the
// Handler's Config before New.
func newEnv(t *testing.T, backend string, configure func(*exporterhttp.Config)) *env {
	t.Helper()
	var addr string
	switch backend {
	case "miniredis":
		addr = miniredis.RunT(t).Addr()
	case "redis":
		addr = redisAddr(t)
	default:
		t.Fatalf("unknown backend %q", backend)
	}
	client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { client.Close() })
	e := &env{gate: newGate(), logs: &syncbuf.Buffer{}}
	store := exporter.NewRedisStore(client).WithPrefix("exporterhttp-" + randomHex(6) + ":")
	exp, err := exporter.New(store, exporter.Config{
		ChunkSize:       chunkSize,
		MaxAttempts:     1,
		AdminPermission: adminPermission,
		Sources: map[string]exporter.Source{
			"csv":    csvSource,
			"gate":   e.gate.source,
			"secret": csvSource, // the Exporter has it; the Handler does not offer it
			"fail":   failSource,
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, exp.Shutdown(ctx))
	})
	e.exp, e.store = exp, store
	cfg := exporterhttp.Config{
		Exporter:     exp,
		Authenticate: authenticate,
		Kinds:        []string{"csv", "gate"},
		Logger:       slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if configure != nil {
		configure(&cfg)
	}
	e.h, err = exporterhttp.New(cfg)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/exports/", http.StripPrefix("/exports", e.h))
	e.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		e.gate.release()
		e.h.CloseStreams()
		e.srv.Close()
	})
	e.url = e.srv.URL + "/exports"
	return e
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// errSessionStore is what authenticate fails with for the user "broken":
// a failure of the service's own, whose text must stay in the log.
var errSessionStore = errors.New("session store unreachable: password=hunter2")

// authenticate is the service's authentication in these tests: the X-User
// header names the user. "guest" lacks the permission to export, "root"
// also holds adminPermission, "broken" and "lookup" make authentication
// fail, no header is unauthenticated, and so is "nobody", whom
// Authenticate returns as the zero User.
func authenticate(r *http.Request) (exporter.User, error) {
	switch id := r.Header.Get("X-User"); id {
	case "":
		return exporter.User{}, fmt.Errorf("no X-User header: %w", exporter.ErrUnauthenticated)
	case "nobody":
		return exporter.User{}, nil
	case "guest":
		return exporter.User{ID: id}, nil
	case "root":
		return exporter.User{ID: id, Permissions: []string{exporter.DefaultPermission, adminPermission}}, nil
	case "broken":
		return exporter.User{}, fmt.Errorf("looking up the session: %w", errSessionStore)
	case "lookup":
		// The service's failure happens to wrap a sentinel of the
		// Exporter's; it is still the service's 500.
		return exporter.User{}, fmt.Errorf("user database: %w", exporter.ErrNotFound)
	default:
		return exporter.User{ID: id, Permissions: []string{exporter.DefaultPermission}}, nil
	}
}

// csvSource is the durable kind "csv": args {"rows": n} give a header and
// n rows that depend only on n, read from offset.
func csvSource(_ context.Context, job *exporter.Job, offset int64) (io.Reader, error) {
	var args struct {
		Rows int `json:"rows"`
	}
	if err := json.Unmarshal(job.Args, &args); err != nil {
		return nil, fmt.Errorf("csv args: %w: %w", err, exporter.ErrPermanent)
	}
	return bytes.NewReader(csvData(args.Rows)[offset:]), nil
}

// failSource is the durable kind "fail", which the Handler does not
// offer: its source fails after a few bytes, with errSourceFailed.
func failSource(context.Context, *exporter.Job, int64) (io.Reader, error) {
	return io.MultiReader(strings.NewReader("id,name\n"), iotest.ErrReader(errSourceFailed)), nil
}

// csvData returns the bytes of a "csv" export of rows rows.
func csvData(rows int) []byte {
	b := []byte("id,name,amount\n")
	for i := 1; i <= rows; i++ {
		b = fmt.Appendf(b, "%d,row %d é,%d.%02d\n", i, i, i*7, i%100)
	}
	return b
}

// gate is the durable kind "gate": the test hands its export the bytes to
// read, a step at a time, so the export stays running until the test
// ends it.
type gate struct {
	steps    chan []byte // nil ends the export (io.EOF)
	done     chan struct{}
	doneOnce sync.Once
}

func newGate() *gate {
	return &gate{steps: make(chan []byte), done: make(chan struct{})}
}

func (g *gate) source(ctx context.Context, _ *exporter.Job, _ int64) (io.Reader, error) {
	return &gateReader{g: g, ctx: ctx, closed: make(chan struct{})}, nil
}

// feed hands the running gated export n bytes.
func (g *gate) feed(t *testing.T, n int) {
	t.Helper()
	select {
	case g.steps <- bytes.Repeat([]byte{'x'}, n):
	case <-time.After(10 * time.Second):
		t.Fatal("the gated export did not read")
	}
}

// finish ends the running gated export: its reader returns io.EOF.
func (g *gate) finish(t *testing.T) {
	t.Helper()
	select {
	case g.steps <- nil:
	case <-time.After(10 * time.Second):
		t.Fatal("the gated export did not read")
	}
}

// release unblocks every gated reader for good, at the end of a test.
func (g *gate) release() { g.doneOnce.Do(func() { close(g.done) }) }

type gateReader struct {
	g         *gate
	ctx       context.Context
	pending   []byte
	closed    chan struct{}
	closeOnce sync.Once
}

func (r *gateReader) Read(p []byte) (int, error) {
	if len(r.pending) == 0 {
		select {
		case b := <-r.g.steps:
			if b == nil {
				return 0, io.EOF
			}
			r.pending = b
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		case <-r.closed:
			return 0, errors.New("gate reader closed")
		case <-r.g.done:
			return 0, errors.New("test over")
		}
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

func (r *gateReader) Close() error {
	r.closeOnce.Do(func() { close(r.closed) })
	return nil
}

// reply is a response, its body read.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// request makes a request to the env's mount; path is relative to it
// ("/", "/<id>/download"), user goes in X-User (none if ""), body is sent
// as JSON if not "", and hdr are more header name/value pairs.
func (e *env) request(t *testing.T, method, path, user, body string, hdr ...string) reply {
	t.Helper()
	req := e.newRequest(t, method, path, user, body, hdr...)
	resp, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return reply{status: resp.StatusCode, header: resp.Header, body: data}
}

func (e *env) newRequest(t *testing.T, method, path, user, body string, hdr ...string) *http.Request {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, e.url+path, r)
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		req.Header.Set("X-User", user)
	}
	require.Zero(t, len(hdr)%2, "header pairs")
	for i := 0; i < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req
}

// start POSTs an export of kind with args as user and returns the job.
func (e *env) start(t *testing.T, user, kind, args string) *exporter.Job {
	t.Helper()
	rep := e.request(t, http.MethodPost, "/", user, `{"kind":`+strconv.Quote(kind)+`,"args":`+args+`}`)
	require.Equal(t, http.StatusCreated, rep.status, "%s", rep.body)
	return decodeJob(t, rep)
}

// startCSV starts a "csv" export of rows rows, with filename if not "",
// waits for it to complete and returns it.
func (e *env) startCSV(t *testing.T, user string, rows int, filename string) *exporter.Job {
	t.Helper()
	body := fmt.Sprintf(`{"kind":"csv","args":{"rows":%d}`, rows)
	if filename != "" {
		body += `,"filename":` + strconv.Quote(filename) + `,"metadata":{"content-type":"text/csv; charset=utf-8"}`
	}
	rep := e.request(t, http.MethodPost, "/", user, body+"}")
	require.Equal(t, http.StatusCreated, rep.status, "%s", rep.body)
	return e.wait(t, user, decodeJob(t, rep).ID)
}

// wait waits for export id to end and returns it.
func (e *env) wait(t *testing.T, user, id string) *exporter.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	job, err := e.exp.WaitExport(ctx, exporter.User{ID: user}, id)
	require.NoError(t, err)
	return job
}

// running waits until export id is running with at least bytes stored.
func (e *env) running(t *testing.T, user, id string, bytes int64) *exporter.Job {
	t.Helper()
	var job *exporter.Job
	require.Eventually(t, func() bool {
		var err error
		job, err = e.exp.GetExportStatus(t.Context(), exporter.User{ID: user}, id)
		require.NoError(t, err)
		return job.Status == exporter.StatusRunning && job.Bytes >= bytes
	}, 10*time.Second, 5*time.Millisecond)
	return job
}

func decodeJob(t *testing.T, rep reply) *exporter.Job {
	t.Helper()
	require.Equal(t, "application/json", rep.header.Get("Content-Type"))
	var job exporter.Job
	require.NoError(t, json.Unmarshal(rep.body, &job), "%s", rep.body)
	require.True(t, exporter.ValidID(job.ID), "%s", rep.body)
	return &job
}

// problem is the problem document of an error response.
type problem struct {
	Type   string          `json:"type"`
	Title  string          `json:"title"`
	Status int             `json:"status"`
	Detail string          `json:"detail"`
	Code   string          `json:"code"`
	Export json.RawMessage `json:"export"`
}

// requireProblem checks that rep is a problem document with status and
// code, and returns it.
func requireProblem(t *testing.T, rep reply, status int, code string) problem {
	t.Helper()
	require.Equal(t, status, rep.status, "%s", rep.body)
	require.Equal(t, "application/problem+json", rep.header.Get("Content-Type"), "%s", rep.body)
	var p problem
	require.NoError(t, json.Unmarshal(rep.body, &p), "%s", rep.body)
	require.Equal(t, status, p.Status)
	require.Equal(t, code, p.Code)
	require.Equal(t, typeBase+code, p.Type)
	require.NotEmpty(t, p.Title)
	require.NotEmpty(t, p.Detail)
	return p
}

// list returns the ids of user's exports, newest first, page by page.
func (e *env) listIDs(t *testing.T, user string) []string {
	t.Helper()
	rep := e.request(t, http.MethodGet, "/", user, "")
	require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
	var page struct {
		Exports []*exporter.Job `json:"exports"`
	}
	require.NoError(t, json.Unmarshal(rep.body, &page))
	ids := []string{}
	for _, j := range page.Exports {
		ids = append(ids, j.ID)
	}
	return ids
}
