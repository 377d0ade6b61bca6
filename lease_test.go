package exporter

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exporterkit/exporter/internal/faultproxy"
	"github.com/exporterkit/exporter/internal/redistest"
	"github.com/stretchr/testify/require"
)

// gateReader blocks until gate is closed, then ends (io.EOF), or fails
// once closed itself.
type gateReader struct {
	gate   <-chan struct{}
	closed chan struct{}
	once   sync.Once
}

func newGateReader(gate <-chan struct{}) *gateReader {
	return &gateReader{gate: gate, closed: make(chan struct{})}
}

func (r *gateReader) Read([]byte) (int, error) {
	select {
	case <-r.gate:
		return 0, io.EOF
	case <-r.closed:
		return 0, errors.New("closed")
	}
}

func (r *gateReader) Close() error {
	r.once.Do(func() { close(r.closed) })
	return nil
}

// manyHeld is how many jobs TestManyHeldJobs holds on one instance.
const manyHeld = 10_000

// TestManyHeldJobs holds 10,000 exports on one instance (16 running, the
// rest pending: pending exports hold leases too) with a 1 s lease, for
// three lease periods: every one stays alive, on one server and on the
// Cluster, because a renewal pass costs a round trip per thousand jobs
// (and per Cluster node), not one per job. It logs what one pass takes,
// then shuts the instance down: every export ends failed by the
// shutdown, none lost.
func TestManyHeldJobs(t *testing.T) {
	for _, name := range []string{"redis", "cluster"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, name)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			logs := newRecordingHandler()
			cfg := Config{LeaseTTL: time.Second, MaxRunning: 16, MaxPending: manyHeld, Logger: slog.New(logs)}
			defer func() { // what the Exporter said, should the test fail
				if !t.Failed() {
					return
				}
				seen := map[string]int{}
				for _, r := range logs.snapshot() {
					seen[r.msg+" "+r.attrs["err"]+r.attrs["cause"]]++
				}
				t.Logf("log: %v", seen)
			}()
			x := e.exporter(t, cfg)
			gate := make(chan struct{}) // never opened: the sources end when closed
			ids := make([]string, manyHeld)
			t0start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < manyHeld; i += 8 {
						job, err := x.StartExport(ctx, alice, newGateReader(gate))
						if err != nil {
							errs <- err
							return
						}
						ids[i] = job.ID
					}
				}()
			}
			wg.Wait()
			t.Logf("started %d in %v", manyHeld, time.Since(t0start))
			close(errs)
			require.NoError(t, <-errs)
			started := time.Now()

			// Time one pass over the same jobs, as the lease keeper makes it.
			var held []Held
			for _, rn := range x.sched.held() {
				held = append(held, Held{ID: rn.job.ID, Owner: rn.job.Owner, Lease: rn.lease})
			}
			require.Len(t, held, manyHeld)
			t0 := time.Now()
			for _, err := range e.store.Renew(ctx, cfg.Retention, held) {
				require.NoError(t, err)
			}
			pass := time.Since(t0)
			t.Logf("%s: a renewal pass of %d jobs took %v (%.1f us a job)", name, manyHeld, pass,
				float64(pass.Microseconds())/manyHeld)

			time.Sleep(3*cfg.LeaseTTL - time.Since(started))
			failed := 0
			for _, id := range ids {
				j, err := e.store.Get(ctx, id, "")
				require.NoError(t, err)
				if j.Status.Terminal() {
					failed++
				}
			}
			require.Zero(t, failed, "of %d held exports, %d ended (worker lost) though their instance lives", manyHeld, failed)
			// Shutdown gives up on them at once: each ends failed, saying so.
			sctx, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer scancel()
			require.ErrorIs(t, x.Shutdown(sctx), context.DeadlineExceeded)
			ended := map[string]int{}
			for _, id := range ids {
				j, err := e.store.Get(ctx, id, "")
				require.NoError(t, err)
				ended[string(j.Status)+": "+j.Error]++
			}
			require.Equal(t, map[string]int{"failed: " + ErrClosed.Error(): manyHeld}, ended)
		})
	}
}

// TestOutageShorterThanTheRetryWindow kills Redis (SIGKILL; it persists
// every write) under 50 exports that write all along, and restarts it
// 1.1 s later; and, separately, cuts every connection for 1.1 s through a
// proxy. Every export rides out the outage and completes. The lease is
// 4 s for the kill: after a restart, go-redis's pool reconnects only at
// its next dial probe (once a second after 20 failed dials), so a client
// sees a killed server come back up to a second late; 2/3 of the lease
// must cover the outage, the restart and that second. A cut (the proxy
// accepts and closes) needs no such margin: 2 s.
func TestOutageShorterThanTheRetryWindow(t *testing.T) {
	for _, fault := range []string{"killed", "cut"} {
		t.Run(fault, func(t *testing.T) { testOutageShorterThanTheRetryWindow(t, fault) })
	}
}

func testOutageShorterThanTheRetryWindow(t *testing.T, fault string) {
	faultNoLeaks(t)
	srv := redistest.StartT(t, redistest.Options{Args: []string{"--appendonly", "yes", "--appendfsync", "always"}})
	proxy := faultproxy.StartT(t, srv.Addr)
	const prefix = "outage:"
	cfg := Config{ChunkSize: faultChunk, LeaseTTL: 4 * time.Second, MaxRunning: 50}
	addr := srv.Addr
	if fault == "cut" {
		addr, cfg.LeaseTTL = proxy.Addr(), 2*time.Second
	}
	x := faultExporter(t, NewRedisStore(faultClient(t, addr)).WithPrefix(prefix), cfg)
	admin := NewRedisStore(faultClient(t, srv.Addr)).WithPrefix(prefix)
	ctx := testCtx(t)

	type export struct {
		id   string
		data []byte
	}
	exports := make([]export, 50)
	for i := range exports {
		data := randomBytes(60*faultChunk + i)
		job, err := x.StartExport(ctx, alice, newFaultSlowSource(data, faultChunk, 40*time.Millisecond, nil))
		require.NoError(t, err)
		exports[i] = export{id: job.ID, data: data}
	}
	faultWaitStored(t, admin, faultIDs(exports, func(ex export) string { return ex.id }), 3*faultChunk)
	const down = 1100 * time.Millisecond
	if fault == "cut" {
		proxy.CutFor(down)
	} else {
		require.NoError(t, srv.Kill())
		time.Sleep(down)
		require.NoError(t, srv.Restart())
	}

	var out faultOutcomes
	for _, ex := range exports {
		job, err := faultWaitTerminal(x, ex.id, time.Now().Add(cfg.LeaseTTL+faultRetryWindow))
		require.NoError(t, err)
		out.add(job)
	}
	t.Logf("Redis %s for 1.1 s under a %v lease: %v", fault, cfg.LeaseTTL, out)
	for _, ex := range exports {
		job, err := admin.Get(ctx, ex.id, "")
		require.NoError(t, err)
		require.Equal(t, StatusCompleted, job.Status, "export failed: %s", job.Error)
		faultRequireOutcome(t, x, admin, job, ex.data)
	}
}

// flakyWrites is a Store whose Writes fail, as on a dropped connection,
// until back.
type flakyWrites struct {
	Store
	back atomic.Int64 // UnixNano
}

func (f *flakyWrites) Write(ctx context.Context, id string, lease Lease, w ChunkWrite) error {
	if time.Now().UnixNano() < f.back.Load() {
		return io.ErrUnexpectedEOF // a connection that broke: worth repeating
	}
	return f.Store.Write(ctx, id, lease, w)
}

// TestWriteRetryUsesItsWindow fails an export's chunk writes for 1.27 s,
// within the 1.33 s (2/3 of a 2 s lease) a write is repeated for: the
// export completes. The backoff used to double past a second and give up
// at 1.26 s because the next attempt, at 2.26 s, would overshoot the
// window; the last attempt now lands inside it.
func TestWriteRetryUsesItsWindow(t *testing.T) {
	e := newEnv(t, "miniredis")
	ctx := testCtx(t)
	flaky := &flakyWrites{Store: e.store}
	x := e.exporterOn(t, flaky, Config{ChunkSize: testChunk, LeaseTTL: 2 * time.Second})
	src := newFeedSource(fill('A', testChunk))
	job, err := x.StartExport(ctx, alice, src)
	require.NoError(t, err)
	waitStatus(t, x, alice, job.ID, StatusRunning)
	flaky.back.Store(time.Now().Add(1270 * time.Millisecond).UnixNano())
	src.feed(fill('B', 2*testChunk))
	src.end(nil)
	job = waitFor(t, x, alice, job.ID, StatusCompleted)
	require.Equal(t, int64(3*testChunk), job.Bytes)
}

// failingRenewals is a Store whose renewals all fail, as with a store that
// is away, and that counts them.
type failingRenewals struct {
	Store
	calls atomic.Int64
}

func (f *failingRenewals) Renew(ctx context.Context, retention time.Duration, held []Held) []error {
	f.calls.Add(1)
	errs := make([]error, len(held))
	for i := range errs {
		errs[i] = io.ErrUnexpectedEOF
	}
	return errs
}

// TestRenewalBackoffStaysBounded keeps every renewal failing for 2.5 s
// with a 100 ms lease: the lease keeper retries at most every 50 ms (its
// backoff is capped), about 50 times, and never spins. (The backoff used
// to double without end; after some 38 failed passes it overflowed and
// the keeper renewed in a busy loop.)
func TestRenewalBackoffStaysBounded(t *testing.T) {
	e := newEnv(t, "miniredis")
	store := &failingRenewals{Store: e.store}
	x := e.exporterOn(t, store, Config{LeaseTTL: 100 * time.Millisecond})
	src := newFeedSource(nil)
	_, err := x.StartExport(testCtx(t), alice, src)
	require.NoError(t, err)
	time.Sleep(2500 * time.Millisecond) // the outage under test
	calls := store.calls.Load()
	require.Greater(t, calls, int64(20), "renewals were not retried")
	require.Less(t, calls, int64(150), "the lease keeper spun: %d renewal passes in 2.5 s", calls)
	src.end(nil)
}

// TestLongExportStaysListed runs an export for 1.2 s on an instance whose
// Retention is 300 ms: the owner's index, created with a TTL of twice
// that, is extended by every lease renewal, so the export stays listed
// while it runs (its own keys live on by their renewals too).
func TestLongExportStaysListed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		x := e.exporter(t, Config{Retention: 300 * time.Millisecond, LeaseTTL: 100 * time.Millisecond})
		src := newFeedSource(nil)
		job, err := x.StartExport(ctx, alice, src)
		require.NoError(t, err)
		for range 48 {
			e.elapse(25 * time.Millisecond)
		}
		list, err := x.ListExports(ctx, alice, ListOptions{})
		require.NoError(t, err)
		require.Len(t, list.Jobs, 1, "a running export left the listing")
		require.Equal(t, job.ID, list.Jobs[0].ID)
		require.False(t, list.Jobs[0].Status.Terminal())
		src.end(nil)
		waitFor(t, x, alice, job.ID, StatusCompleted)
	})
}
