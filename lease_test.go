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
			x.mu.Lock()
			held := make([]Held, 0, len(x.runs))
			for _, rn := range x.runs {
				held = append(held, Held{ID: rn.job.ID, Owner: rn.job.Owner, Lease: rn.lease})
			}
			x.mu.Unlock()
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
