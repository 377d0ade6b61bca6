package exporter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/exporterkit/exporter/internal/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// The real servers are shared by the whole package (each test isolates
// itself by key prefix) and started on first use, so a run of miniredis-only
// tests starts none. TestMain stops them.
var shared struct {
	once       sync.Once
	standalone *redistest.Server
	cluster    *redistest.Cluster
	err        error
}

func sharedServers(t *testing.T) (*redistest.Server, *redistest.Cluster) {
	t.Helper()
	shared.once.Do(func() {
		shared.standalone, shared.err = redistest.Start(redistest.Options{})
		if shared.err == nil {
			shared.cluster, shared.err = redistest.StartCluster(3)
		}
	})
	if shared.err != nil {
		if errors.Is(shared.err, redistest.ErrNotInstalled) && !redistest.Required() {
			t.Skipf("real Redis tests skipped: %v", shared.err)
		}
		t.Fatalf("starting the real Redis servers: %v", shared.err)
	}
	return shared.standalone, shared.cluster
}

func stopSharedServers() {
	if shared.standalone != nil {
		shared.standalone.Stop()
	}
	if shared.cluster != nil {
		shared.cluster.Stop()
	}
}

// env is one backend under test with a key prefix of its own.
type env struct {
	name   string
	mr     *miniredis.Miniredis // nil on real servers
	dial   func() redis.UniversalClient
	client redis.UniversalClient
	store  *RedisStore
	prefix string
}

// backends lists the backends every behaviour test runs on: miniredis for
// speed, a real standalone server and a real 3-master Cluster for truth.
var backends = []string{"miniredis", "redis", "cluster"}

// forEachBackend runs f once per backend, as subtests.
func forEachBackend(t *testing.T, f func(t *testing.T, e *env)) {
	t.Helper()
	for _, name := range backends {
		t.Run(name, func(t *testing.T) { f(t, newEnv(t, name)) })
	}
}

func newEnv(t *testing.T, name string) *env {
	t.Helper()
	e := &env{name: name, prefix: "t" + randomHex(6) + ":"}
	switch name {
	case "miniredis":
		e.mr = miniredis.RunT(t)
		e.dial = func() redis.UniversalClient {
			return redis.NewClient(&redis.Options{Addr: e.mr.Addr(), ContextTimeoutEnabled: true})
		}
	case "redis":
		srv, _ := sharedServers(t)
		e.dial = func() redis.UniversalClient {
			return redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})
		}
	case "cluster":
		_, cl := sharedServers(t)
		e.dial = func() redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs, ContextTimeoutEnabled: true})
		}
	default:
		t.Fatalf("unknown backend %q", name)
	}
	e.client = e.newClient(t)
	e.store = NewRedisStore(e.client).WithPrefix(e.prefix)
	return e
}

// newClient returns a client of its own, closed when the test ends.
func (e *env) newClient(t *testing.T) redis.UniversalClient {
	c := e.dial()
	t.Cleanup(func() { c.Close() })
	return c
}

// exporter returns an Exporter on the env's store, shut down when the test
// ends (after the cleanups registered later, such as readers' releases).
func (e *env) exporter(t *testing.T, cfg Config) *Exporter {
	t.Helper()
	return e.exporterOn(t, e.store, cfg)
}

// secondExporter returns an Exporter on a client of its own, as another
// instance of the service would have.
func (e *env) secondExporter(t *testing.T, cfg Config) *Exporter {
	t.Helper()
	return e.exporterOn(t, NewRedisStore(e.newClient(t)).WithPrefix(e.prefix), cfg)
}

func (e *env) exporterOn(t *testing.T, store Store, cfg Config) *Exporter {
	t.Helper()
	return newExporterT(t, store, cfg)
}

// newExporterT returns an Exporter on store, shut down when the test ends.
func newExporterT(t *testing.T, store Store, cfg Config) *Exporter {
	t.Helper()
	x, err := New(store, cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		x.Shutdown(ctx)
	})
	return x
}

// keys returns every key under the env's prefix, on every master.
func (e *env) keys(t *testing.T) []string {
	t.Helper()
	ctx := testCtx(t)
	var (
		mu  sync.Mutex
		out []string
	)
	scan := func(ctx context.Context, c *redis.Client) error {
		ks, err := c.Keys(ctx, e.prefix+"*").Result()
		mu.Lock()
		out = append(out, ks...)
		mu.Unlock()
		return err
	}
	switch c := e.client.(type) {
	case *redis.ClusterClient:
		require.NoError(t, c.ForEachMaster(ctx, scan))
	case *redis.Client:
		require.NoError(t, scan(ctx, c))
	}
	return out
}

// requireTTLs fails unless every key under the prefix has a TTL.
func (e *env) requireTTLs(t *testing.T) {
	t.Helper()
	for _, k := range e.keys(t) {
		ttl, err := e.client.PTTL(testCtx(t), k).Result()
		require.NoError(t, err)
		// -2: expired between KEYS and PTTL, which is fine; -1: no TTL.
		require.NotEqual(t, time.Duration(-1), ttl, "key %s has no TTL", k)
	}
}

// elapse lets d pass: real time (the job timestamps come from the
// server's clock, which miniredis takes from the real one) and, on
// miniredis, which expires keys only when told to, key time too.
func (e *env) elapse(d time.Duration) {
	time.Sleep(d)
	if e.mr != nil {
		e.mr.FastForward(d)
	}
}

// Users of the tests.
var (
	alice  = User{ID: "alice", Permissions: []string{"exporter"}}
	bob    = User{ID: "bob", Permissions: []string{"exporter"}}
	admin  = User{ID: "root", Permissions: []string{"exporter-admin"}}
	nobody = User{ID: "nobody"}
	anon   = User{}
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// feedSource is a controllable export source: it serves data, then blocks
// until more is fed or it is closed, and counts its Closes.
type feedSource struct {
	mu     sync.Mutex
	cond   *sync.Cond
	data   []byte
	eof    bool
	err    error // returned once data is drained
	closed atomic.Int32
	done   chan struct{} // closed on the first Close
	reads  atomic.Int64  // bytes handed out
}

func newFeedSource(data []byte) *feedSource {
	s := &feedSource{data: data, done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// feed adds bytes; end makes the feedSource return io.EOF (or err) once drained.
func (s *feedSource) feed(b []byte) {
	s.mu.Lock()
	s.data = append(s.data, b...)
	s.mu.Unlock()
	s.cond.Broadcast()
}

func (s *feedSource) end(err error) {
	s.mu.Lock()
	s.eof, s.err = true, err
	s.mu.Unlock()
	s.cond.Broadcast()
}

func (s *feedSource) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.data) == 0 && !s.eof && s.closed.Load() == 0 {
		s.cond.Wait()
	}
	if s.closed.Load() > 0 {
		return 0, errors.New("source closed")
	}
	if len(s.data) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		return 0, io.EOF
	}
	n := copy(p, s.data)
	s.data = s.data[n:]
	s.reads.Add(int64(n))
	return n, nil
}

func (s *feedSource) Close() error {
	if s.closed.Add(1) == 1 {
		close(s.done)
	}
	s.cond.Broadcast()
	return nil
}

// requireClosedOnce waits for the source's Close and checks it came once.
func (s *feedSource) requireClosedOnce(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("source was not closed")
	}
	require.Equal(t, int32(1), s.closed.Load(), "feedSource closed more than once")
}

// waitFor waits for job id to reach want, through WaitExport.
func waitFor(t *testing.T, x *Exporter, user User, id string, want Status) *Job {
	t.Helper()
	job, err := x.WaitExport(testCtx(t), user, id)
	require.NoError(t, err)
	require.Equal(t, want, job.Status, "job error: %s", job.Error)
	return job
}

// waitWaiting waits until x has n WaitExport (or WatchExport) calls on
// job id registered on its subscription: a test's synchronization point
// instead of a sleep.
func waitWaiting(t *testing.T, x *Exporter, id string, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		x.waitersMu.Lock()
		defer x.waitersMu.Unlock()
		return len(x.waiters[id]) >= n
	}, 10*time.Second, time.Millisecond, "no %d waiters on %s", n, id)
}

// waitStatus polls until job id has status want (for non-terminal ones).
func waitStatus(t *testing.T, x *Exporter, user User, id string, want Status) *Job {
	t.Helper()
	var job *Job
	require.Eventually(t, func() bool {
		var err error
		job, err = x.GetExportStatus(testCtx(t), user, id)
		require.NoError(t, err)
		return job.Status == want
	}, 10*time.Second, 5*time.Millisecond, "job never reached %s", want)
	return job
}

// recordingHandler is a slog.Handler that keeps every record: its
// message, its attributes (those added by With too) and the value of
// ctxKey in its context.
type recordingHandler struct {
	attrs []slog.Attr
	log   *recordLog
}

type recordLog struct {
	mu      sync.Mutex
	records []logRecord
}

type logRecord struct {
	msg      string
	attrs    map[string]string
	ctxValue any
}

func newRecordingHandler() *recordingHandler { return &recordingHandler{log: &recordLog{}} }

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordingHandler{attrs: append(slices.Clip(h.attrs), as...), log: h.log}
}

func (h *recordingHandler) Handle(ctx context.Context, r slog.Record) error {
	rec := logRecord{msg: r.Message, attrs: map[string]string{}, ctxValue: ctx.Value(ctxKey{})}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { rec.attrs[a.Key] = a.Value.String(); return true })
	h.log.mu.Lock()
	h.log.records = append(h.log.records, rec)
	h.log.mu.Unlock()
	return nil
}

// snapshot returns the records handled so far.
func (h *recordingHandler) snapshot() []logRecord {
	h.log.mu.Lock()
	defer h.log.mu.Unlock()
	return slices.Clone(h.log.records)
}

// NewTestStore returns a RedisStore on backend ("miniredis", "redis" or
// "cluster") with a key prefix of its own, and a function that lets time
// pass on its clock. It serves the tests of package exporter_test (the
// Store conformance suite), which cannot reach env.
func NewTestStore(t *testing.T, backend string) (*RedisStore, func(time.Duration)) {
	e := newEnv(t, backend)
	return e.store, e.elapse
}

// TestBackends are the backends NewTestStore knows.
var TestBackends = backends
