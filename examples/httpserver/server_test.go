package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.uber.org/goleak"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/internal/redistest"
	"github.com/exporterkit/exporter/internal/syncbuf"
)

// TestMain runs the tests, stops the shared redis-server, then checks that
// no goroutine outlived its test.
func TestMain(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		if err := shared.srv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping redis-server:", err)
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// One real redis-server serves the whole package, started on first use;
// each test has a key prefix of its own.
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

// instance is one instance of the service: its own Redis client, Exporter
// and HTTP server. Instances made with the same address and prefix share
// their exports.
type instance struct {
	exp *exporter.Exporter
	srv *server
	ts  *httptest.Server
}

// newInstance starts an instance whose server is set up by opts, if any,
// before it serves. It is shut down when the test ends; an export still
// running then makes the Exporter's Shutdown, and the test, fail.
func newInstance(t *testing.T, addr, prefix string, cfg exporter.Config, opts ...func(*server)) *instance {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	cfg.AdminPermission = adminPermission
	cfg.Logger = testLogger(t)
	if cfg.Sources == nil {
		cfg.Sources = map[string]exporter.Source{csvKind: csvSource}
	}
	exp, err := exporter.New(exporter.NewRedisStore(client).WithPrefix(prefix), cfg)
	require.NoError(t, err)
	srv := newServer(exp, cfg.Logger)
	srv.watchEvery = 20 * time.Millisecond
	for _, opt := range opts {
		opt(srv)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.closeStreams()
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := exp.Shutdown(ctx)
		client.Close()
		require.NoError(t, err, "exports were still running when the test ended")
	})
	return &instance{exp: exp, srv: srv, ts: ts}
}

// pair starts two instances on one Redis and prefix.
func pair(t *testing.T, cfg exporter.Config) (a, b *instance) {
	addr, prefix := redisAddr(t), testPrefix()
	return newInstance(t, addr, prefix, cfg), newInstance(t, addr, prefix, cfg)
}

// reply is a response, read in full.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// call sends a request as user ("" for none) with body (sent as JSON when
// not empty) and headers as name, value pairs, which override the defaults.
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
	resp, err := in.ts.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return reply{status: resp.StatusCode, header: resp.Header, body: data}
}

func (r reply) job(t *testing.T) *exporter.Job {
	t.Helper()
	require.Equal(t, "application/json", r.header.Get("Content-Type"), "body %s", r.body)
	var job exporter.Job
	require.NoError(t, json.Unmarshal(r.body, &job), "body %s", r.body)
	return &job
}

func (r reply) apiError(t *testing.T) apiError {
	t.Helper()
	require.Equal(t, "application/json", r.header.Get("Content-Type"), "body %s", r.body)
	var e apiError
	require.NoError(t, json.Unmarshal(r.body, &e), "body %s", r.body)
	require.NotEmpty(t, e.Error)
	return e
}

// requireError checks that r is the JSON error status / code.
func (r reply) requireError(t *testing.T, status int, code string) apiError {
	t.Helper()
	require.Equal(t, status, r.status, "body %s", r.body)
	e := r.apiError(t)
	require.Equal(t, code, e.Code)
	return e
}

// start starts an export as user and returns it.
func (in *instance) start(t *testing.T, user, body string) *exporter.Job {
	t.Helper()
	r := in.call(t, "POST", "/exports", user, body)
	require.Equal(t, http.StatusAccepted, r.status, "body %s", r.body)
	job := r.job(t)
	require.Equal(t, "/exports/"+job.ID, r.header.Get("Location"))
	return job
}

// waitStatus waits until in reports job id with status, and returns it.
func (in *instance) waitStatus(t *testing.T, user, id string, status exporter.Status) *exporter.Job {
	t.Helper()
	var job *exporter.Job
	eventually(t, 20*time.Second, func() bool {
		r := in.call(t, "GET", "/exports/"+id, user, "")
		require.Equal(t, http.StatusOK, r.status, "body %s", r.body)
		job = r.job(t)
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

// slowExport is an export that runs for minutes unless cancelled.
const slowExport = `{"rows": 1000000, "rows_per_second": 5000, "filename": "slow.csv"}`

func generated(t *testing.T, rows int64) []byte {
	t.Helper()
	data, err := io.ReadAll(newDataset(rows, 0))
	require.NoError(t, err)
	return data
}

// sseEvent is one Server-Sent Event; a comment has name ":".
type sseEvent struct{ name, data string }

// sseStream reads an event stream in a goroutine of its own, which ends
// when the stream does or when the test ends.
type sseStream struct {
	events chan sseEvent // closed at the end of the stream
}

func (in *instance) openEvents(t *testing.T, user, id string) *sseStream {
	t.Helper()
	req, err := http.NewRequest("GET", in.ts.URL+"/exports/"+id+"/events", nil)
	require.NoError(t, err)
	req.Header.Set("X-User", user)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := in.ts.Client().Do(req)
	require.NoError(t, err)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("events: status %d: %s", resp.StatusCode, body)
	}
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	s := &sseStream{events: make(chan sseEvent)}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { // owned: the cleanup below waits for it
		defer close(done)
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var ev sseEvent
		emit := func(e sseEvent) bool {
			select {
			case s.events <- e:
				return true
			case <-stop:
				return false
			}
		}
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" || ev.data != "" {
					if !emit(ev) {
						return
					}
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				if !emit(sseEvent{name: ":", data: strings.TrimSpace(line[1:])}) {
					return
				}
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data += line[len("data: "):]
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		resp.Body.Close()
		<-done
	})
	return s
}

// next returns the next event that is not a comment, or fails the test if
// none comes within timeout. ok is false at the end of the stream.
func (s *sseStream) next(t *testing.T, timeout time.Duration) (ev sseEvent, ok bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case ev, ok := <-s.events:
			if ok && ev.name == ":" {
				continue
			}
			return ev, ok
		case <-deadline.C:
			t.Fatalf("no event within %v", timeout)
			return sseEvent{}, false
		}
	}
}

func (s *sseStream) nextJob(t *testing.T, timeout time.Duration) *exporter.Job {
	t.Helper()
	ev, ok := s.next(t, timeout)
	require.True(t, ok, "the stream ended")
	require.Equal(t, "job", ev.name, "event %+v", ev)
	var job exporter.Job
	require.NoError(t, json.Unmarshal([]byte(ev.data), &job))
	return &job
}

// requireEnd checks that the next event is "end" for job and that the
// stream then ends.
func (s *sseStream) requireEnd(t *testing.T, job *exporter.Job) {
	t.Helper()
	ev, ok := s.next(t, 10*time.Second)
	require.True(t, ok, "the stream ended without an end event")
	require.Equal(t, "end", ev.name)
	require.JSONEq(t, fmt.Sprintf(`{"id":%q,"status":%q}`, job.ID, job.Status), ev.data)
	_, ok = s.next(t, 10*time.Second)
	require.False(t, ok, "the stream goes on after its end event")
}

// TestTwoInstancesFollowAndCancel starts a slow export on A, and follows
// and cancels it through B.
func TestTwoInstancesFollowAndCancel(t *testing.T) {
	t.Parallel()
	a, b := pair(t, exporter.Config{ChunkSize: 4 << 10})

	job := a.start(t, "alice", slowExport)
	require.Equal(t, "alice", job.Owner)
	require.Contains(t, []exporter.Status{exporter.StatusPending, exporter.StatusRunning}, job.Status)
	require.Equal(t, datasetSize(1_000_000), job.Total)
	require.Equal(t, map[string]string{"filename": "slow.csv", "content-type": "text/csv",
		"rows": "1000000", "rows_per_second": "5000"}, job.Metadata)

	// B sees it, alone and in the list.
	r := b.call(t, "GET", "/exports/"+job.ID, "alice", "")
	require.Equal(t, http.StatusOK, r.status)
	seen := r.job(t)
	require.Equal(t, job.ID, seen.ID)
	require.Equal(t, job.Total, seen.Total)
	r = b.call(t, "GET", "/exports", "alice", "")
	require.Equal(t, http.StatusOK, r.status)
	var list exporter.ExportList
	require.NoError(t, json.Unmarshal(r.body, &list))
	require.Len(t, list.Jobs, 1)
	require.Equal(t, job.ID, list.Jobs[0].ID)

	// B streams its progress.
	events := b.openEvents(t, "alice", job.ID)
	first := events.nextJob(t, 10*time.Second)
	require.Equal(t, job.ID, first.ID)
	var last *exporter.Job
	for progress := 0; progress < 3; {
		j := events.nextJob(t, 10*time.Second)
		require.Equal(t, exporter.StatusRunning, j.Status)
		require.Greater(t, j.Bytes, int64(0))
		if last != nil {
			require.Greater(t, j.Bytes, last.Bytes, "a progress event without progress")
		}
		last = j
		progress++
	}
	require.Less(t, last.Bytes, last.Total)

	// Downloading it now is too early.
	r = b.call(t, "GET", "/exports/"+job.ID+"/download", "alice", "")
	e := r.requireError(t, http.StatusConflict, "not_ready")
	require.Equal(t, exporter.StatusRunning, e.Status)

	// B cancels it; A, which runs it, stops it.
	r = b.call(t, "DELETE", "/exports/"+job.ID, "alice", "")
	require.Equal(t, http.StatusOK, r.status, "body %s", r.body)
	cancelled := r.job(t)
	require.Equal(t, exporter.StatusCancelled, cancelled.Status)
	require.Equal(t, exporter.ErrCancelled.Error(), cancelled.Error)

	// The stream ends with the cancelled snapshot and "end".
	for {
		j := events.nextJob(t, 10*time.Second)
		if j.Status.Terminal() {
			require.Equal(t, exporter.StatusCancelled, j.Status)
			events.requireEnd(t, j)
			break
		}
	}

	r = a.call(t, "GET", "/exports/"+job.ID, "alice", "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, exporter.StatusCancelled, r.job(t).Status)
	// A cancelled export cannot be downloaded; cancelling it again is fine.
	r = a.call(t, "GET", "/exports/"+job.ID+"/download", "alice", "")
	e = r.requireError(t, http.StatusConflict, "not_ready")
	require.Equal(t, exporter.StatusCancelled, e.Status)
	r = a.call(t, "DELETE", "/exports/"+job.ID, "alice", "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, exporter.StatusCancelled, r.job(t).Status)
}

// TestDownloadFromOtherInstance runs a fast export on A and downloads it
// through B: in full, in ranges, conditionally.
func TestDownloadFromOtherInstance(t *testing.T) {
	t.Parallel()
	a, b := pair(t, exporter.Config{ChunkSize: 4 << 10})
	const rows = 20_000
	want := generated(t, rows)
	sum := sha256.Sum256(want)
	checksum := "sha256:" + hex.EncodeToString(sum[:])

	started := a.start(t, "bob", `{"rows": 20000, "filename": "report 2025.csv"}`)
	job := b.waitStatus(t, "bob", started.ID, exporter.StatusCompleted)
	require.Equal(t, int64(len(want)), job.Bytes)
	require.Equal(t, job.Bytes, job.Total, "WithTotal was the exact size")
	require.Equal(t, checksum, job.Checksum)
	etag := `"` + checksum + `"`
	path := "/exports/" + job.ID + "/download"

	r := b.call(t, "GET", path, "bob", "")
	require.Equal(t, http.StatusOK, r.status)
	require.True(t, bytes.Equal(want, r.body), "downloaded %d bytes, want the %d generated", len(r.body), len(want))
	require.Equal(t, strconv.Itoa(len(want)), r.header.Get("Content-Length"))
	require.Equal(t, "text/csv", r.header.Get("Content-Type"))
	require.Equal(t, `attachment; filename="report 2025.csv"`, r.header.Get("Content-Disposition"))
	require.Equal(t, etag, r.header.Get("ETag"))
	require.Equal(t, job.FinishedAt.UTC().Format(http.TimeFormat), r.header.Get("Last-Modified"))
	require.Equal(t, "bytes", r.header.Get("Accept-Ranges"))

	// A range across chunk boundaries.
	r = b.call(t, "GET", path, "bob", "", "Range", "bytes=1000-9999")
	require.Equal(t, http.StatusPartialContent, r.status)
	require.Equal(t, fmt.Sprintf("bytes 1000-9999/%d", len(want)), r.header.Get("Content-Range"))
	require.Equal(t, want[1000:10000], r.body)
	// The last bytes.
	r = b.call(t, "GET", path, "bob", "", "Range", "bytes=-10")
	require.Equal(t, http.StatusPartialContent, r.status)
	require.Equal(t, want[len(want)-10:], r.body)
	// Beyond the end.
	r = b.call(t, "GET", path, "bob", "", "Range", fmt.Sprintf("bytes=%d-", len(want)))
	require.Equal(t, http.StatusRequestedRangeNotSatisfiable, r.status)

	// If-Range: the current ETag gets the range, a stale one the whole.
	r = b.call(t, "GET", path, "bob", "", "Range", "bytes=100-199", "If-Range", etag)
	require.Equal(t, http.StatusPartialContent, r.status)
	require.Equal(t, want[100:200], r.body)
	r = b.call(t, "GET", path, "bob", "", "Range", "bytes=100-199", "If-Range", `"sha256:stale"`)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, want, r.body)
	// If-None-Match: not modified.
	r = b.call(t, "GET", path, "bob", "", "If-None-Match", etag)
	require.Equal(t, http.StatusNotModified, r.status)
	require.Empty(t, r.body)

	// The admin may download it; another user may not know it exists.
	r = a.call(t, "GET", path, "admin", "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, want, r.body)
	r = a.call(t, "GET", path, "carol", "")
	r.requireError(t, http.StatusNotFound, "not_found")

	// A completed export cannot be cancelled.
	r = b.call(t, "DELETE", "/exports/"+job.ID, "bob", "")
	e := r.requireError(t, http.StatusConflict, "finished")
	require.Equal(t, exporter.StatusCompleted, e.Status)

	// The events of a finished export: its snapshot, then the end.
	events := a.openEvents(t, "bob", job.ID)
	j := events.nextJob(t, 10*time.Second)
	require.Equal(t, exporter.StatusCompleted, j.Status)
	events.requireEnd(t, j)
}

func TestDownloadFilenames(t *testing.T) {
	t.Parallel()
	a := newInstance(t, redisAddr(t), testPrefix(), exporter.Config{})
	for _, tt := range []struct {
		name, filename, disposition string
	}{
		{"unicode", "résumé.csv", `attachment; filename*=utf-8''r%C3%A9sum%C3%A9.csv`},
		{"path", "../../etc/passwd", `attachment; filename=passwd`},
		{"quotes and controls", "a\"b\r\nc.csv", `attachment; filename=a_b__c.csv`},
		{"empty", "", `attachment; filename=export.csv`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body, err := json.Marshal(map[string]any{"rows": 3, "filename": tt.filename})
			require.NoError(t, err)
			job := a.start(t, "alice", string(body))
			a.waitStatus(t, "alice", job.ID, exporter.StatusCompleted)
			r := a.call(t, "GET", "/exports/"+job.ID+"/download", "alice", "")
			require.Equal(t, http.StatusOK, r.status)
			require.Equal(t, tt.disposition, r.header.Get("Content-Disposition"))
		})
	}
}

func TestSanitizeFilename(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want string }{
		{"report.csv", "report.csv"},
		{"Q1 report (final).csv", "Q1 report (final).csv"},
		{`C:\Users\x\data.csv`, "data.csv"},
		{"../../etc/passwd", "passwd"},
		{"..", "export.csv"},
		{".hidden.csv", "hidden.csv"},
		{"   ", "export.csv"},
		{"a;b=c\".csv", "a_b_c_.csv"},
		{"\xff\xfe.csv", "_.csv"},
		{"日本語.csv", "日本語.csv"},
		{strings.Repeat("é", 100), strings.Repeat("é", 64)},
	} {
		got := sanitizeFilename(tt.in)
		require.Equal(t, tt.want, got, "sanitizeFilename(%q)", tt.in)
		require.LessOrEqual(t, len(got), maxFilename)
	}
}

// TestErrors checks the status and JSON error of each refusal, and that
// none of them started an export.
func TestErrors(t *testing.T) {
	t.Parallel()
	a := newInstance(t, redisAddr(t), testPrefix(), exporter.Config{})
	done := a.start(t, "alice", `{"rows": 10}`)
	a.waitStatus(t, "alice", done.ID, exporter.StatusCompleted)
	unknown := uuid.NewString()

	for _, tt := range []struct {
		name, method, path, user, body string
		headers                        []string
		status                         int
		code                           string
	}{
		{name: "list without user", method: "GET", path: "/exports", status: 401, code: "unauthenticated"},
		{name: "start without user", method: "POST", path: "/exports", body: `{}`, status: 401, code: "unauthenticated"},
		{name: "status without user", method: "GET", path: "/exports/" + done.ID, status: 401, code: "unauthenticated"},
		{name: "cancel without user", method: "DELETE", path: "/exports/" + done.ID, status: 401, code: "unauthenticated"},
		{name: "download without user", method: "GET", path: "/exports/" + done.ID + "/download", status: 401, code: "unauthenticated"},
		{name: "events without user", method: "GET", path: "/exports/" + done.ID + "/events", status: 401, code: "unauthenticated"},
		{name: "me without user", method: "GET", path: "/me", status: 401, code: "unauthenticated"},
		{name: "malformed user", method: "GET", path: "/exports", user: "Alice Smith", status: 401, code: "unauthenticated"},
		{name: "malformed user cookie", method: "GET", path: "/exports", headers: []string{"Cookie", userCookie + "=../x"}, status: 401, code: "unauthenticated"},

		{name: "guest starts", method: "POST", path: "/exports", user: "guest", body: `{}`, status: 403, code: "forbidden"},
		{name: "list another owner", method: "GET", path: "/exports?owner=alice", user: "bob", status: 403, code: "forbidden"},

		{name: "another user's status", method: "GET", path: "/exports/" + done.ID, user: "bob", status: 404, code: "not_found"},
		{name: "another user's cancel", method: "DELETE", path: "/exports/" + done.ID, user: "bob", status: 404, code: "not_found"},
		{name: "another user's download", method: "GET", path: "/exports/" + done.ID + "/download", user: "bob", status: 404, code: "not_found"},
		{name: "another user's events", method: "GET", path: "/exports/" + done.ID + "/events", user: "bob", status: 404, code: "not_found"},
		{name: "unknown status", method: "GET", path: "/exports/" + unknown, user: "alice", status: 404, code: "not_found"},
		{name: "unknown cancel", method: "DELETE", path: "/exports/" + unknown, user: "alice", status: 404, code: "not_found"},
		{name: "unknown download", method: "GET", path: "/exports/" + unknown + "/download", user: "alice", status: 404, code: "not_found"},
		{name: "unknown events", method: "GET", path: "/exports/" + unknown + "/events", user: "alice", status: 404, code: "not_found"},
		{name: "malformed id", method: "GET", path: "/exports/not-an-id", user: "alice", status: 404, code: "not_found"},
		{name: "malformed id events", method: "GET", path: "/exports/not-an-id/events", user: "alice", status: 404, code: "not_found"},
		{name: "unknown id for the admin", method: "GET", path: "/exports/" + unknown, user: "admin", status: 404, code: "not_found"},

		{name: "cancel completed", method: "DELETE", path: "/exports/" + done.ID, user: "alice", status: 409, code: "finished"},

		{name: "truncated JSON", method: "POST", path: "/exports", user: "alice", body: `{"rows":`, status: 400, code: "invalid"},
		{name: "not an object", method: "POST", path: "/exports", user: "alice", body: `[1]`, status: 400, code: "invalid"},
		{name: "zero rows", method: "POST", path: "/exports", user: "alice", body: `{"rows": 0}`, status: 400, code: "invalid"},
		{name: "negative rows", method: "POST", path: "/exports", user: "alice", body: `{"rows": -3}`, status: 400, code: "invalid"},
		{name: "too many rows", method: "POST", path: "/exports", user: "alice", body: `{"rows": 10000001}`, status: 400, code: "invalid"},
		{name: "rows not a number", method: "POST", path: "/exports", user: "alice", body: `{"rows": "many"}`, status: 400, code: "invalid"},
		{name: "fractional rows", method: "POST", path: "/exports", user: "alice", body: `{"rows": 1.5}`, status: 400, code: "invalid"},
		{name: "negative rate", method: "POST", path: "/exports", user: "alice", body: `{"rows_per_second": -1}`, status: 400, code: "invalid"},
		{name: "unknown field", method: "POST", path: "/exports", user: "alice", body: `{"rowz": 5}`, status: 400, code: "invalid"},
		{name: "two objects", method: "POST", path: "/exports", user: "alice", body: `{"rows": 1} {"rows": 2}`, status: 400, code: "invalid"},
		{name: "form body", method: "POST", path: "/exports", user: "alice", body: `rows=5`,
			headers: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 415, code: "unsupported_media_type"},
		{name: "body too large", method: "POST", path: "/exports", user: "alice",
			body: `{"filename": "` + strings.Repeat("x", maxStartBody) + `"}`, status: 413, code: "body_too_large"},
		{name: "export too large", method: "POST", path: "/exports", user: "alice", body: `{"rows": 10000000}`, status: 413, code: "too_large"},

		{name: "limit not a number", method: "GET", path: "/exports?limit=ten", user: "alice", status: 400, code: "invalid"},
		{name: "limit zero", method: "GET", path: "/exports?limit=0", user: "alice", status: 400, code: "invalid"},
		{name: "limit too high", method: "GET", path: "/exports?limit=5000", user: "alice", status: 400, code: "invalid"},
		{name: "bad cursor", method: "GET", path: "/exports?cursor=garbage", user: "alice", status: 400, code: "invalid"},

		{name: "login without user", method: "POST", path: "/login", body: `{}`, status: 400, code: "invalid"},
		{name: "login malformed user", method: "POST", path: "/login", body: `{"user": "Bob!"}`, status: 400, code: "invalid"},
		{name: "login as text", method: "POST", path: "/login", body: `alice`,
			headers: []string{"Content-Type", "text/plain"}, status: 415, code: "unsupported_media_type"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := a.call(t, tt.method, tt.path, tt.user, tt.body, tt.headers...)
			r.requireError(t, tt.status, tt.code)
		})
	}

	// None of these wrote anything: alice has her one export, the
	// others none, and hers is still completed.
	for user, want := range map[string]int{"alice": 1, "bob": 0, "guest": 0} {
		r := a.call(t, "GET", "/exports", user, "")
		require.Equal(t, http.StatusOK, r.status)
		var list exporter.ExportList
		require.NoError(t, json.Unmarshal(r.body, &list))
		require.Len(t, list.Jobs, want, user)
	}
	require.Equal(t, exporter.StatusCompleted, a.call(t, "GET", "/exports/"+done.ID, "alice", "").job(t).Status)
}

// TestErrorMapping covers the errors no request to a healthy service
// produces.
func TestErrorMapping(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err    error
		status int
		code   string
		text   string // "" means err.Error()
	}{
		{fmt.Errorf("exporter: start: %w", exporter.ErrClosed), 503, "shutting_down", ""},
		{fmt.Errorf("exporter: start: %w", exporter.ErrBusy), 503, "busy", ""},
		{fmt.Errorf("exporter: list: %w", context.DeadlineExceeded), 500, "internal", "internal error"},
		{errors.New("dial tcp 10.0.0.1:6379: secret detail"), 500, "internal", "internal error"},
	} {
		status, body := errorBody(tt.err, nil)
		require.Equal(t, tt.status, status, "%v", tt.err)
		require.Equal(t, tt.code, body.Code)
		if tt.text == "" {
			tt.text = tt.err.Error()
		}
		require.Equal(t, tt.text, body.Error)
	}
}

// TestBusy fills one user's quota (MaxPerUser): the next export is
// accepted and waits, pending, while others' exports run; it starts when
// one of the user's running exports ends.
func TestBusy(t *testing.T) {
	t.Parallel()
	a := newInstance(t, redisAddr(t), testPrefix(), exporter.Config{MaxPerUser: 2})
	first := a.start(t, "alice", slowExport)
	second := a.start(t, "alice", slowExport)
	a.waitStatus(t, "alice", first.ID, exporter.StatusRunning)
	a.waitStatus(t, "alice", second.ID, exporter.StatusRunning)

	third := a.start(t, "alice", slowExport) // accepted: it waits in the queue
	other := a.start(t, "bob", slowExport)
	a.waitStatus(t, "bob", other.ID, exporter.StatusRunning)
	require.Equal(t, exporter.StatusPending, a.call(t, "GET", "/exports/"+third.ID, "alice", "").job(t).Status,
		"alice's third export ran beside her two")

	require.Equal(t, http.StatusOK, a.call(t, "DELETE", "/exports/"+first.ID, "alice", "").status)
	a.waitStatus(t, "alice", third.ID, exporter.StatusRunning)

	for _, c := range []struct{ user, id string }{{"alice", second.ID}, {"alice", third.ID}, {"bob", other.ID}} {
		r := a.call(t, "DELETE", "/exports/"+c.id, c.user, "")
		require.Equal(t, http.StatusOK, r.status, "body %s", r.body)
	}
}

// TestListAndAdmin pages through a user's exports, and lists them as the
// admin.
func TestListAndAdmin(t *testing.T) {
	t.Parallel()
	a, b := pair(t, exporter.Config{})
	var ids []string
	for range 3 {
		job := a.start(t, "alice", `{"rows": 5}`)
		a.waitStatus(t, "alice", job.ID, exporter.StatusCompleted)
		ids = append(ids, job.ID)
	}
	slices.Reverse(ids) // newest first

	list := func(in *instance, user, query string) exporter.ExportList {
		t.Helper()
		r := in.call(t, "GET", "/exports"+query, user, "")
		require.Equal(t, http.StatusOK, r.status, "body %s", r.body)
		var l exporter.ExportList
		require.NoError(t, json.Unmarshal(r.body, &l))
		return l
	}
	idsOf := func(l exporter.ExportList) []string {
		var out []string
		for _, j := range l.Jobs {
			out = append(out, j.ID)
		}
		return out
	}

	page := list(b, "alice", "?limit=2")
	require.Equal(t, ids[:2], idsOf(page))
	require.NotEmpty(t, page.Next)
	rest := list(b, "alice", "?limit=2&cursor="+page.Next)
	require.Equal(t, ids[2:], idsOf(rest))
	require.Empty(t, rest.Next)

	// Everyone has a list of their own, empty for bob; the admin reads
	// alice's, and her exports.
	require.Empty(t, list(b, "bob", "").Jobs)
	require.Empty(t, list(b, "admin", "").Jobs)
	require.Equal(t, ids, idsOf(list(b, "admin", "?owner=alice")))
	r := b.call(t, "GET", "/exports/"+ids[0], "admin", "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "alice", r.job(t).Owner)
}

// TestLogin logs in with JSON and with a form, and out.
func TestLogin(t *testing.T) {
	t.Parallel()
	a := newInstance(t, redisAddr(t), testPrefix(), exporter.Config{})
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	client := &http.Client{
		Transport: a.ts.Client().Transport,
		Jar:       jar,
		// See the redirect of a form login rather than follow it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	do := func(method, path, contentType, body string, headers ...string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, a.ts.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, data
	}
	me := func(headers ...string) (int, string) {
		t.Helper()
		resp, body := do("GET", "/me", "", "", headers...)
		var m struct{ ID string }
		json.Unmarshal(body, &m)
		return resp.StatusCode, m.ID
	}

	status, _ := me()
	require.Equal(t, http.StatusUnauthorized, status)

	resp, _ := do("POST", "/login", "application/json", `{"user": "alice"}`)
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	cookies := resp.Cookies()
	require.Len(t, cookies, 1)
	c := cookies[0]
	require.Equal(t, userCookie, c.Name)
	require.Equal(t, "alice", c.Value)
	require.Equal(t, "/", c.Path)
	require.True(t, c.HttpOnly)
	require.Equal(t, http.SameSiteLaxMode, c.SameSite)

	status, id := me()
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "alice", id)
	// X-User wins over the cookie.
	_, id = me("X-User", "bob")
	require.Equal(t, "bob", id)

	// The cookie's user exports.
	resp, body := do("POST", "/exports", "application/json", `{"rows": 5}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body %s", body)
	var job exporter.Job
	require.NoError(t, json.Unmarshal(body, &job))
	require.Equal(t, "alice", job.Owner)
	a.waitStatus(t, "alice", job.ID, exporter.StatusCompleted)

	// A form login redirects to the page.
	resp, _ = do("POST", "/login", "application/x-www-form-urlencoded", "user=carol")
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/", resp.Header.Get("Location"))
	_, id = me()
	require.Equal(t, "carol", id)

	resp, _ = do("POST", "/logout", "", "")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	status, _ = me()
	require.Equal(t, http.StatusUnauthorized, status)
}

// TestPage checks the page's contract with the browser test and its
// scripts, and that it loads nothing from elsewhere.
func TestPage(t *testing.T) {
	t.Parallel()
	a := newInstance(t, redisAddr(t), testPrefix(), exporter.Config{})

	r := a.call(t, "GET", "/", "", "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "text/html; charset=utf-8", r.header.Get("Content-Type"))
	require.Contains(t, r.header.Get("Content-Security-Policy"), "default-src 'self'")
	page := string(r.body)
	require.Contains(t, page, "<title>exporter demo</title>")
	for _, element := range []string{
		`<form id="login-form"`, `<input id="login-user"`, `<button id="login-button" type="submit"`,
		`id="whoami"`, `<form id="start-form"`, `<input id="rows" type="number"`, `<input id="rate" type="number"`,
		`<input id="filename"`, `<button id="start-button" type="submit"`, `<ul id="exports">`, `<div id="error"`,
	} {
		require.Contains(t, page, element)
	}

	r = a.call(t, "GET", "/static/app.js", "", "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "text/javascript; charset=utf-8", r.header.Get("Content-Type"))
	script := string(r.body)
	for _, s := range []string{`li.className = 'export'`, `li.dataset.id`, `li.dataset.status`,
		`<progress class="progress" max="1"`, `class="status"`, `class="bytes"`, `class="cancel"`,
		`link.className = 'download'`, "`/exports/${encodeURIComponent(job.id)}/download`",
		`new EventSource(`, `addEventListener('end'`, `'#error'`} {
		require.Contains(t, script, s)
	}
	r = a.call(t, "GET", "/static/style.css", "", "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "text/css; charset=utf-8", r.header.Get("Content-Type"))

	r = a.call(t, "GET", "/static/missing.js", "", "")
	require.Equal(t, http.StatusNotFound, r.status)

	// No file refers to another site.
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	require.NoError(t, fs.WalkDir(staticFiles, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := staticFiles.ReadFile(path)
		require.NoError(t, err)
		require.Empty(t, external.FindAllString(string(data), -1), "%s refers to another site", path)
		return nil
	}))
}

// TestEventsPingAndShutdown checks that an idle stream gets pings and that
// closeStreams (the server shutting down) ends it.
func TestEventsPingAndShutdown(t *testing.T) {
	t.Parallel()
	a := newInstance(t, redisAddr(t), testPrefix(), exporter.Config{}, func(s *server) {
		s.pingEvery = 20 * time.Millisecond
	})
	// One row a second fills its first 64 KiB chunk in minutes: a running
	// export without progress events, so only pings come.
	job := a.start(t, "alice", `{"rows": 1000000, "rows_per_second": 1}`)
	events := a.openEvents(t, "alice", job.ID)
	pings := 0
	deadline := time.After(10 * time.Second)
	for pings < 2 {
		select {
		case ev, ok := <-events.events:
			require.True(t, ok, "the stream ended")
			if ev.name == ":" {
				require.Equal(t, "ping", ev.data)
				pings++
			}
		case <-deadline:
			t.Fatalf("%d pings in 10s", pings)
		}
	}

	a.srv.closeStreams()
	for {
		ev, ok := events.next(t, 10*time.Second)
		if !ok {
			break
		}
		require.Equal(t, "job", ev.name, "no end event: the export has not ended")
	}
	// Streams opened afterwards end at once.
	late := a.openEvents(t, "alice", job.ID)
	for ok := true; ok; {
		var ev sseEvent
		ev, ok = late.next(t, 10*time.Second)
		require.NotEqual(t, "end", ev.name)
	}
	r := a.call(t, "DELETE", "/exports/"+job.ID, "alice", "")
	require.Equal(t, http.StatusOK, r.status)
}

// TestEventsEndWhenClientGoes checks that a stream's handler returns when
// its client disconnects: the test server's Close waits for it. The export
// makes no progress and pings are far apart, so no failed write can end
// the handler instead.
func TestEventsEndWhenClientGoes(t *testing.T) {
	t.Parallel()
	a := newInstance(t, redisAddr(t), testPrefix(), exporter.Config{})
	job := a.start(t, "alice", `{"rows": 1000000, "rows_per_second": 1}`)

	req, err := http.NewRequest("GET", a.ts.URL+"/exports/"+job.ID+"/events", nil)
	require.NoError(t, err)
	req.Header.Set("X-User", "alice")
	resp, err := a.ts.Client().Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	br := bufio.NewReader(resp.Body)
	for _, want := range []string{"retry: 2000\n", "\n", "event: job\n"} {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, want, line)
	}
	require.NoError(t, resp.Body.Close())

	closed := make(chan struct{})
	go func() { // owned: waited for below
		defer close(closed)
		a.ts.Close() // returns once every request has, streams included
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		a.srv.closeStreams() // let the goroutine and the test end
		<-closed
		t.Error("the event stream's handler did not return after its client left")
	}
	_, err = a.exp.CancelExport(context.Background(), demoUser("alice"), job.ID)
	require.NoError(t, err)
}

var (
	miniredisLine = regexp.MustCompile(`^embedded miniredis at (redis://127\.0\.0\.1:\d+) \(start a second instance with REDIS_URL=(redis://127\.0\.0\.1:\d+)\)$`)
	listeningLine = regexp.MustCompile(`^listening on (http://127\.0\.0\.1:\d+)$`)
)

// runMain runs run in a goroutine, waits for its "listening on" line and
// returns the URL and its stdout lines so far, and the channel of run's
// result.
func runMain(t *testing.T, ctx context.Context, env map[string]string, args ...string) (url string, lines []string, result chan error) {
	t.Helper()
	stdout := &syncbuf.Buffer{}
	result = make(chan error, 1)
	go func() { // owned: the caller receives from result
		result <- run(ctx, args, func(k string) string { return env[k] }, stdout, t.Output())
	}()
	eventually(t, 20*time.Second, func() bool {
		select {
		case err := <-result:
			t.Fatalf("run returned early: %v; stdout: %q", err, stdout.String())
		default:
		}
		lines = strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
		m := listeningLine.FindStringSubmatch(lines[len(lines)-1])
		if m != nil {
			url = m[1]
		}
		return m != nil
	}, "no listening line")
	return url, lines, result
}

func waitResult(t *testing.T, result chan error) error {
	t.Helper()
	select {
	case err := <-result:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return 30s after its context was cancelled")
		return nil
	}
}

// TestRun runs the program in process: an instance with an embedded
// miniredis and a second one on it, an export started on one and seen on
// the other, and a shutdown that fails a running export and ends its
// event stream.
func TestRun(t *testing.T) {
	t.Parallel()
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	get := func(method, url, user, body string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("X-User", user)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, data
	}
	read := func(url, id string) *exporter.Job {
		t.Helper()
		code, body := get("GET", url+"/exports/"+id, "alice", "")
		require.Equal(t, http.StatusOK, code, "body %s", body)
		var job exporter.Job
		require.NoError(t, json.Unmarshal(body, &job))
		return &job
	}
	status := func(url, id string) exporter.Status { return read(url, id).Status }

	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	url1, lines, result1 := runMain(t, ctx1, nil, "-addr", "127.0.0.1:0")
	require.Len(t, lines, 2, "stdout: %q", lines)
	m := miniredisLine.FindStringSubmatch(lines[0])
	require.NotNil(t, m, "first line %q", lines[0])
	require.Equal(t, m[1], m[2])
	redisURL := m[1]

	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	url2, lines2, result2 := runMain(t, ctx2, map[string]string{"REDIS_URL": redisURL},
		"-addr", "127.0.0.1:0", "-grace", "50ms")
	require.Len(t, lines2, 1, "with REDIS_URL only the listening line: %q", lines2)

	code, page := get("GET", url1+"/", "", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(page), "exporter demo")

	// Started on 1, seen on 2.
	code, body := get("POST", url1+"/exports", "alice", `{"rows": 100}`)
	require.Equal(t, http.StatusAccepted, code, "body %s", body)
	var job exporter.Job
	require.NoError(t, json.Unmarshal(body, &job))
	eventually(t, 10*time.Second, func() bool { return status(url2, job.ID) == exporter.StatusCompleted })

	// A slow export started on 2, followed on 2, when 2 shuts down: the
	// stream ends, and the durable export goes on, on 1 (which resumes it
	// where 2 stopped if 2 ran it: 2 hands it back once the grace period
	// is over).
	code, body = get("POST", url2+"/exports", "alice", slowExport)
	require.Equal(t, http.StatusAccepted, code, "body %s", body)
	var slow exporter.Job
	require.NoError(t, json.Unmarshal(body, &slow))
	req, err := http.NewRequest("GET", url2+"/exports/"+slow.ID+"/events", nil)
	require.NoError(t, err)
	req.Header.Set("X-User", "alice")
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	cancel2()
	require.NoError(t, waitResult(t, result2))
	_, err = io.Copy(io.Discard, resp.Body) // the stream has ended
	require.NoError(t, err)
	after := read(url1, slow.ID).Bytes
	eventually(t, 10*time.Second, func() bool {
		j := read(url1, slow.ID)
		require.Equal(t, exporter.StatusRunning, j.Status, "the export stopped with its instance")
		return j.Bytes > after
	})
	code, body = get("DELETE", url1+"/exports/"+slow.ID, "alice", "")
	require.Equal(t, http.StatusOK, code, "body %s", body)

	cancel1()
	require.NoError(t, waitResult(t, result1))
	_, err = client.Get(url1 + "/")
	require.Error(t, err, "the server still answers after run returned")
}

func TestRunStartupErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	noEnv := func(string) string { return "" }

	err := run(ctx, []string{"-h"}, noEnv, io.Discard, io.Discard)
	require.ErrorIs(t, err, flag.ErrHelp)
	err = run(ctx, []string{"-no-such-flag"}, noEnv, io.Discard, io.Discard)
	require.ErrorAs(t, err, new(usageError))
	err = run(ctx, []string{"extra"}, noEnv, io.Discard, io.Discard)
	require.ErrorAs(t, err, new(usageError))

	// A Redis that does not answer, with its password kept out of the error.
	err = run(ctx, nil, func(string) string { return "redis://user:hunter2@127.0.0.1:1/0" }, io.Discard, io.Discard)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "hunter2")
	require.Contains(t, err.Error(), "REDIS_URL")

	// An address that cannot be listened on.
	var stdout syncbuf.Buffer
	err = run(ctx, []string{"-addr", "127.0.0.1:-1"}, noEnv, &stdout, io.Discard)
	require.Error(t, err)
	require.NotContains(t, stdout.String(), "listening on")
}

// TestMetrics: GET /metrics shows the Exporter's OpenTelemetry metrics as
// they move: exports started, ended by status, bytes stored.
func TestMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { meters.Shutdown(context.Background()) })
	in := newInstance(t, redisAddr(t), testPrefix(), exporter.Config{MeterProvider: meters},
		func(s *server) { s.mux.Handle("GET /metrics", metricsHandler(reader)) })

	type points map[string][]metricPoint
	read := func() points {
		t.Helper()
		r := in.call(t, "GET", "/metrics", "", "")
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
		var ps points
		require.NoError(t, json.Unmarshal(r.body, &ps), "%s", r.body)
		return ps
	}
	value := func(ps points, name string, attrs map[string]string) int64 {
		for _, p := range ps[name] {
			if maps.Equal(p.Attributes, attrs) && p.Value != nil {
				return *p.Value
			}
		}
		return 0
	}

	r := in.call(t, "POST", "/exports", "alice", `{"rows": 2000}`)
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	var job exporter.Job
	require.NoError(t, json.Unmarshal(r.body, &job))
	done, err := in.exp.WaitExport(context.Background(), demoUser("alice"), job.ID)
	require.NoError(t, err)
	require.Equal(t, exporter.StatusCompleted, done.Status)

	var ps points
	require.Eventually(t, func() bool {
		ps = read()
		return value(ps, "exporter.exports.ended", map[string]string{"status": "completed"}) == 1
	}, 5*time.Second, 10*time.Millisecond, "metrics: %v", ps)
	require.Equal(t, int64(1), value(ps, "exporter.exports.started", nil))
	require.Equal(t, done.Bytes, value(ps, "exporter.bytes.stored", nil))
	require.Equal(t, int64(0), value(ps, "exporter.exports.running", nil))
	durations := ps["exporter.export.duration"]
	require.Len(t, durations, 1)
	require.Equal(t, uint64(1), *durations[0].Count)
}

// TestCrossOrigin: a browser page of another origin cannot use the demo
// cookie to change anything (start, cancel, log in or out); the page's own
// requests, and tools that send no Origin (curl), can.
func TestCrossOrigin(t *testing.T) {
	in := newInstance(t, redisAddr(t), testPrefix(), exporter.Config{})
	send := func(method, path, contentType, body string, headers ...string) int {
		t.Helper()
		req, err := http.NewRequest(method, in.ts.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		req.AddCookie(&http.Cookie{Name: userCookie, Value: "alice"})
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		for i := 0; i < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	foreign := []string{"Origin", "http://evil.localhost:3000"}
	crossSite := []string{"Sec-Fetch-Site", "same-site"}
	for _, h := range [][]string{foreign, crossSite} {
		// What fetch(url, {mode: "no-cors", credentials: "include", body: blob}) sends.
		require.Equal(t, http.StatusForbidden, send("POST", "/exports", "", `{"rows": 5}`, h...), h)
		require.Equal(t, http.StatusForbidden, send("POST", "/login", "application/x-www-form-urlencoded", "user=mallory", h...), h)
		require.Equal(t, http.StatusForbidden, send("POST", "/logout", "application/x-www-form-urlencoded", "", h...), h)
	}
	list := in.call(t, "GET", "/exports", "alice", "")
	require.Equal(t, http.StatusOK, list.status)
	require.JSONEq(t, `{"jobs":[]}`, string(list.body), "a refused start started nothing")

	// The page itself (same origin), and curl (no Origin).
	require.Equal(t, http.StatusAccepted, send("POST", "/exports", "application/json", `{"rows": 5}`,
		"Origin", in.ts.URL, "Sec-Fetch-Site", "same-origin"))
	require.Equal(t, http.StatusAccepted, send("POST", "/exports", "", `{"rows": 5}`))
	// Safe methods are never refused.
	require.Equal(t, http.StatusOK, send("GET", "/exports", "", "", foreign...))
}
