package exporter

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
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

			// Time one pass over the same number of jobs, on leases of
			// another token (they are all refused, at the cost of a renewal).
			held := make([]Held, manyHeld)
			for i, id := range ids {
				held[i] = Held{ID: id, Owner: alice.ID, Lease: Lease{Token: "not-theirs", TTL: time.Second}}
			}
			t0 := time.Now()
			results := e.store.Renew(ctx, cfg.Retention, held)
			pass := time.Since(t0)
			require.ErrorIs(t, results[0], ErrLeaseLost)
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

// TestOutageShorterThanTheRetryWindow cuts Redis away for 1.1 s from 50
// exports that write all along, with a 2 s lease: a write is repeated for
// two thirds of the lease (1.33 s), and a renewal soon after a failed
// one, so every export rides out the outage and completes. (The write's
// doubling backoff used to overshoot its window and give up with 0.2 s
// left, and renewals to resume too late for leases near their end.)
func TestOutageShorterThanTheRetryWindow(t *testing.T) {
	faultNoLeaks(t)
	srv := redistest.StartT(t, redistest.Options{})
	proxy := faultproxy.StartT(t, srv.Addr)
	const prefix = "outage:"
	cfg := Config{ChunkSize: faultChunk, LeaseTTL: 2 * time.Second, MaxRunning: 50}
	x := faultExporter(t, NewRedisStore(faultClient(t, proxy.Addr())).WithPrefix(prefix), cfg)
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
	require.Eventually(t, func() bool {
		for _, ex := range exports {
			if j, err := admin.Get(ctx, ex.id, ""); err != nil || j.Bytes < 3*faultChunk {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond)
	proxy.CutFor(1100 * time.Millisecond)

	var out faultOutcomes
	for _, ex := range exports {
		job, err := faultWaitTerminal(x, ex.id, time.Now().Add(cfg.LeaseTTL+faultRetryWindow))
		require.NoError(t, err)
		out.add(job)
	}
	t.Logf("after a 1.1 s outage with a 2 s lease: %v", out)
	for _, ex := range exports {
		job, err := admin.Get(ctx, ex.id, "")
		require.NoError(t, err)
		require.Equal(t, StatusCompleted, job.Status, "export failed: %s", job.Error)
		faultRequireOutcome(t, x, admin, job, ex.data)
	}
}
