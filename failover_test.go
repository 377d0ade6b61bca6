package exporter

// Fault 4, failover: a master with replicas and three Sentinels
// (internal/redistest.SentinelGroup), the Exporter on go-redis's failover
// client, and the master SIGKILLed while exports run. The tests record
// what a user sees (docs/failover.md quotes their figures): which exports
// complete, which fail and with what Job.Error, which vanish; and they
// check that none reads completed without exactly its bytes, and that
// MinReplicas keeps the completions it reported.
//
// Each runs twice: with the replicas in sync at the kill (the usual case:
// on a healthy link they trail the master by well under a millisecond),
// and with them lagging. Lag is made, not waited for: every replica is
// frozen (SIGSTOP) just before the kill and a ballast of bytes written to
// the master fills the kernel's socket buffers towards them, so the writes
// made meanwhile are still in the master's memory when it dies and never
// reach the replica that is promoted.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exporterkit/exporter/internal/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

const (
	// failoverLeaseTTL outlives a failover (about 2 to 4 s after the kill
	// with the group's 1 s down-after), so that exports idle meanwhile keep
	// their lease on the new master.
	failoverLeaseTTL       = 8 * time.Second
	failoverReplicaTimeout = 100 * time.Millisecond
	failoverBusy           = 14       // exports writing a chunk every 30 ms through the kill
	failoverIdle           = 6        // exports waiting on their source from before the freeze until after the failover
	failoverLate           = 2        // exports started right before the kill
	failoverFinishing      = 2        // exports whose last chunk arrives right before the kill
	failoverBallast        = 16 << 20 // bytes written to the master while the replicas are frozen
	// failoverUnsent is how many bytes of the replication stream must still
	// be in the master's memory (CLIENT LIST omem) at the kill for the
	// writes made during the freeze to be certainly lost: their own bytes
	// are a few KiB, and omem overcounts by at most one 64 KiB block.
	failoverUnsent = 1 << 20
	// failoverWithin bounds the wait for a failover. One takes about 2.3 s
	// here, but when the Sentinels split their votes they try again only
	// after twice the failover-timeout (10 s), as Sentinel does.
	failoverWithin = 45 * time.Second
)

// failoverCtx is the context of a failover test: longer than testCtx's,
// since a failover may take a retried election.
func failoverCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// failoverClient returns a failover client with the options the README
// asks for (ContextTimeoutEnabled) and short timeouts, closed when the test
// ends.
func failoverClient(t *testing.T, g *redistest.SentinelGroup) *redis.Client {
	t.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:            g.MasterName(),
		SentinelAddrs:         g.SentinelAddrs(),
		ContextTimeoutEnabled: true,
		DialTimeout:           500 * time.Millisecond,
		ReadTimeout:           time.Second,
		WriteTimeout:          time.Second,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// failoverExport is one export of the scenario and what became of it.
type failoverExport struct {
	kind string // settled, busy, idle, finishing, late, last: see failoverScenario
	id   string
	data []byte
	src  *faultSlowSource // nil for the ones read from a bytes.Reader

	// What the Exporter that ran it reported through WaitExport, and when;
	// done is closed then (for the exports with a waiter).
	seen    *Job
	seenErr error
	seenAt  time.Time
	done    chan struct{}

	// What a fresh Exporter on a fresh failover client reads after the
	// failover: a terminal job, or an error wrapping ErrNotFound.
	final    *Job
	finalErr error
}

// completedBefore reports whether the running Exporter reported the
// export completed before t.
func (ex *failoverExport) completedBefore(t time.Time) bool {
	return ex.seenErr == nil && ex.seen != nil && ex.seen.Status == StatusCompleted && ex.seenAt.Before(t)
}

func (ex *failoverExport) lost() bool { return errors.Is(ex.finalErr, ErrNotFound) }

// failoverRun is the outcome of failoverScenario.
type failoverRun struct {
	g        *redistest.SentinelGroup
	stalled  bool // the replicas were frozen before the kill
	exports  []*failoverExport
	killAt   time.Time
	tookOver time.Duration // from the kill until the Sentinels agreed on the new master
	unsent   int64         // replication bytes still in the old master at the kill (least over the replicas)
	stuck    int           // exports the first Exporter did not see end by its deadline

	mu       sync.Mutex
	waitErrs faultErrors // errors WaitExport returned during the failover, by kind
}

// failoverScenario runs the scenario on a group of replicas replicas and
// an Exporter with cfg, the replicas frozen before the kill if stall, and
// returns every export with what the running Exporter reported and what a
// fresh one reads after the failover. It checks what holds whatever the
// configuration: every export ends (or vanishes) by a deadline, none reads
// completed without exactly its bytes, a failed one has a reason, the
// exports completed and replicated before the kill are intact, those
// started while the replicas were frozen are gone, and every source is
// closed once.
//
// The exports:
//   - settled: completed, and seen on every replica, before anything else;
//   - busy: a chunk every 30 ms; some complete before the kill, the others
//     are writing through it;
//   - idle: two chunks stored (and seen on every replica), then the source
//     waits until the failover is over (and, with MinReplicas, a replica
//     follows the new master);
//   - finishing: three chunks stored (and seen on every replica), then the
//     last one arrives right before the kill (while the replicas are
//     frozen, if stall), and the export ends;
//   - late: slow exports started right before the kill (ditto);
//   - last: one small export started and waited for (WaitExport) right
//     before the kill (ditto).
func failoverScenario(t *testing.T, replicas int, cfg Config, stall bool) *failoverRun {
	faultNoLeaks(t)
	g := redistest.StartSentinelGroupT(t, replicas, 3)
	run := &failoverRun{g: g, stalled: stall, waitErrs: faultErrors{}}
	const prefix = "failover:"
	x := faultExporter(t, NewRedisStore(failoverClient(t, g)).WithPrefix(prefix), cfg)
	ctx := failoverCtx(t)
	master, err := g.Master()
	require.NoError(t, err)
	admin := faultClient(t, master.Addr) // the first master, directly
	var replicaStores []*RedisStore
	for _, n := range g.Nodes[1:] {
		replicaStores = append(replicaStores, NewRedisStore(faultClient(t, n.Addr)).WithPrefix(prefix))
	}
	// onReplicas waits until every replica holds the export as ok says.
	onReplicas := func(id string, ok func(*Job) bool) {
		t.Helper()
		require.Eventually(t, func() bool {
			for _, rs := range replicaStores {
				if j, err := rs.Get(ctx, id, ""); err != nil || !ok(j) {
					return false
				}
			}
			return true
		}, 10*time.Second, 5*time.Millisecond, "export %s never reached the replicas", id)
	}

	for i := range 3 {
		data := randomBytes(1 + i*5*faultChunk)
		job, err := x.StartExport(ctx, alice, bytes.NewReader(data))
		require.NoError(t, err)
		ex := &failoverExport{kind: "settled", id: job.ID, data: data}
		ex.seen = waitFor(t, x, alice, job.ID, StatusCompleted)
		ex.seenAt = time.Now()
		onReplicas(job.ID, func(j *Job) bool { return j.Status == StatusCompleted && j.Checksum == checksum(data) })
		run.exports = append(run.exports, ex)
	}

	// Every export but the settled and last ones has a waiter on the
	// running Exporter, which records what it reports and when. The
	// waiters stop at a deadline set once the failover is over.
	waitCtx, stopWaiting := context.WithCancel(context.Background())
	var (
		waiters   sync.WaitGroup
		completed atomic.Int32 // busy exports reported completed
	)
	defer func() { // also when the test fails half-way
		stopWaiting()
		waiters.Wait()
	}()
	watch := func(ex *failoverExport) {
		waiters.Add(1)
		go func() {
			defer waiters.Done()
			ex.seen, ex.seenErr = failoverWait(waitCtx, x, ex.id, func(err error) {
				run.mu.Lock()
				run.waitErrs.add(err)
				run.mu.Unlock()
			})
			ex.seenAt = time.Now()
			if ex.kind == "busy" && ex.seenErr == nil && ex.seen.Status == StatusCompleted {
				completed.Add(1)
			}
			close(ex.done)
		}()
	}
	start := func(kind string, data []byte, src *faultSlowSource) *failoverExport {
		t.Helper()
		job, err := x.StartExport(ctx, alice, src)
		require.NoError(t, err)
		ex := &failoverExport{kind: kind, id: job.ID, data: data, src: src, done: make(chan struct{})}
		run.exports = append(run.exports, ex)
		watch(ex)
		return ex
	}

	hold, finish := make(chan struct{}), make(chan struct{})
	var released, finished bool
	defer func() {
		if !released {
			close(hold)
		}
		if !finished {
			close(finish)
		}
	}()
	var idle, finishing []*failoverExport
	for i := range failoverIdle {
		data := randomBytes(6*faultChunk + i)
		src := newFaultSlowSource(data, faultChunk, time.Millisecond, nil)
		src.hold, src.holdAt = hold, 2*faultChunk
		idle = append(idle, start("idle", data, src))
	}
	for i := range failoverFinishing {
		data := randomBytes(3*faultChunk + 1 + i)
		src := newFaultSlowSource(data, faultChunk, time.Millisecond, nil)
		src.hold, src.holdAt = finish, 3*faultChunk
		finishing = append(finishing, start("finishing", data, src))
	}
	for i := range failoverBusy {
		data := randomBytes((6+8*i)*faultChunk + i)
		start("busy", data, newFaultSlowSource(data, faultChunk, 30*time.Millisecond, nil))
	}
	for _, ex := range idle {
		onReplicas(ex.id, func(j *Job) bool { return j.Status == StatusRunning && j.Bytes == 2*faultChunk })
	}
	for _, ex := range finishing {
		onReplicas(ex.id, func(j *Job) bool { return j.Status == StatusRunning && j.Bytes == 3*faultChunk })
	}
	// A few busy exports completed: the next ones complete about the time
	// of the kill, the rest are writing.
	require.Eventually(t, func() bool { return completed.Load() >= 4 }, 15*time.Second, time.Millisecond)

	if stall {
		require.NoError(t, failoverStall(ctx, g, admin))
	}
	finished = true
	close(finish)
	for range failoverLate {
		data := randomBytes(40 * faultChunk)
		start("late", data, newFaultSlowSource(data, faultChunk, 30*time.Millisecond, nil))
	}
	last := &failoverExport{kind: "last", data: randomBytes(2*faultChunk + 5)}
	job, err := x.StartExport(ctx, alice, bytes.NewReader(last.data))
	require.NoError(t, err)
	last.id = job.ID
	run.exports = append(run.exports, last)
	// Without MinReplicas the export completes in milliseconds. With it,
	// long enough for the three WAITs of the completing write, and short
	// enough that the Sentinels do not see frozen replicas down (1 s).
	wait := time.Second
	if cfg.MinReplicas > 0 {
		wait = 3*cfg.ReplicaTimeout + 200*time.Millisecond
	}
	lctx, cancel := context.WithTimeout(ctx, wait)
	last.seen, last.seenErr = x.WaitExport(lctx, alice, last.id)
	last.seenAt = time.Now()
	cancel()
	for _, ex := range finishing {
		select {
		case <-ex.done:
		case <-time.After(2 * time.Second):
			t.Fatalf("finishing export %s did not end before the kill", ex.id)
		}
	}
	if stall {
		run.unsent = failoverUnsentBytes(t, admin)
	}

	run.killAt = time.Now()
	_, err = g.KillMaster()
	require.NoError(t, err)
	if stall {
		for _, n := range g.Nodes[1:] {
			require.NoError(t, n.Thaw())
		}
	}
	fctx, cancel := context.WithTimeout(ctx, failoverWithin)
	defer cancel()
	newMaster, err := g.WaitFailover(fctx)
	require.NoError(t, err)
	tookOverAt := time.Now()
	run.tookOver = tookOverAt.Sub(run.killAt)
	// With MinReplicas, an export can complete only once a replica follows
	// the new master: release the idle ones then.
	if cfg.MinReplicas > 0 {
		require.NoError(t, g.WaitReplicas(fctx, cfg.MinReplicas))
	}
	released = true
	close(hold)

	// Every export ends within LeaseTTL (a job whose end could not be
	// recorded reads failed once its lease lapses) plus a retry window.
	deadline := time.Now().Add(cfg.LeaseTTL + faultRetryWindow)
	timer := time.AfterFunc(time.Until(deadline), stopWaiting)
	waiters.Wait()
	timer.Stop()

	// A fresh Exporter on a fresh failover client reads every export; the
	// stores on the new master directly check the chunks.
	x2 := faultExporter(t, NewRedisStore(failoverClient(t, g)).WithPrefix(prefix), cfg)
	newAdmin := faultClient(t, newMaster.Addr)
	newStore := NewRedisStore(newAdmin).WithPrefix(prefix)
	for _, ex := range run.exports {
		if ex.seenErr != nil && !errors.Is(ex.seenErr, ErrNotFound) && ex.kind != "last" {
			run.stuck++
			t.Logf("%s export %s: the running Exporter saw no end by the deadline: %v", ex.kind, ex.id, ex.seenErr)
		}
		// An end recorded only on the old master is lost: the export reads
		// running on the new one until its lease (last renewed before the
		// kill) lapses.
		end := run.killAt.Add(cfg.LeaseTTL)
		if end.Before(tookOverAt) {
			end = tookOverAt
		}
		ex.final, ex.finalErr = faultWaitTerminal(x2, ex.id, end.Add(faultRetryWindow))
		if ex.lost() {
			continue
		}
		if ex.finalErr != nil {
			// Say what the new master holds, and what the running Exporter
			// last saw, for the record of a failure.
			got, err := newAdmin.HGetAll(context.Background(), newStore.keys(ex.id)[0]).Result()
			ttl := newAdmin.PTTL(context.Background(), newStore.keys(ex.id)[2]).Val()
			t.Logf("%s export %s on the new master: %v (err %v), lease PTTL %v; the running Exporter saw %+v (err %v) at %v after the kill; the failover took %v",
				ex.kind, ex.id, got, err, ttl, ex.seen, ex.seenErr, ex.seenAt.Sub(run.killAt), tookOverAt.Sub(run.killAt))
		}
		require.NoError(t, ex.finalErr, "%s export %s did not end by the deadline", ex.kind, ex.id)
		faultRequireOutcome(t, x2, newStore, ex.final, ex.data)
		// What the running Exporter reported after the failover was over is
		// what the new master holds.
		if ex.seenErr == nil && ex.seenAt.After(run.killAt.Add(run.tookOver)) {
			require.Equal(t, ex.seen.Status, ex.final.Status, "%s export %s", ex.kind, ex.id)
		}
	}
	for _, ex := range run.exports {
		if ex.kind == "settled" {
			require.NotNil(t, ex.final, "settled export %s, completed and replicated before the kill, vanished", ex.id)
			require.Equal(t, StatusCompleted, ex.final.Status, "settled export %s, completed and replicated before the kill", ex.id)
		}
	}
	if stall && run.unsent >= failoverUnsent {
		// What was written during the freeze never left the old master: the
		// exports started then are gone, whatever was reported.
		for _, ex := range run.exports {
			if ex.kind == "last" || ex.kind == "late" {
				require.True(t, ex.lost(), "%s export %s, started during the freeze, survived: %v %v", ex.kind, ex.id, ex.final, ex.finalErr)
			}
		}
	}

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, x.Shutdown(sctx))
	for _, ex := range run.exports {
		if ex.src != nil {
			require.Equal(t, int32(1), ex.src.closes.Load(), "%s export %s: source closes", ex.kind, ex.id)
		}
	}
	faultRequireTTLs(t, newAdmin, prefix)
	return run
}

// failoverStall freezes every replica of g and writes a ballast to the
// master (admin's server) that fills the kernel's socket buffers towards
// them: from then on what the master takes stays in its memory until the
// replicas thaw, and dies with it. The ballast key is outside the tests'
// prefixes.
func failoverStall(ctx context.Context, g *redistest.SentinelGroup, admin *redis.Client) error {
	for _, n := range g.Nodes[1:] {
		if err := n.Freeze(); err != nil {
			return err
		}
	}
	pipe := admin.Pipeline()
	block := randomBytes(64 << 10) // blocks, not one value: omem then counts what is unsent to within one
	for range failoverBallast / len(block) {
		pipe.Append(ctx, "ballast", string(block))
	}
	pipe.PExpire(ctx, "ballast", time.Minute)
	_, err := pipe.Exec(ctx)
	return err
}

// failoverWait waits through x until job id is terminal or reads
// ErrNotFound, retrying the errors of a failover (passed to retried),
// until ctx is done.
func failoverWait(ctx context.Context, x *Exporter, id string, retried func(error)) (*Job, error) {
	for {
		job, err := x.WaitExport(ctx, alice, id)
		if err == nil || errors.Is(err, ErrNotFound) || ctx.Err() != nil {
			return job, err
		}
		retried(err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// failoverUnsentBytes returns the least output buffer (CLIENT LIST omem)
// of the master's replica connections: the replication bytes none of the
// kernel's buffers has taken yet.
func failoverUnsentBytes(t *testing.T, admin *redis.Client) int64 {
	t.Helper()
	list, err := admin.Do(testCtx(t), "CLIENT", "LIST", "TYPE", "replica").Text()
	require.NoError(t, err)
	least := int64(-1)
	for _, m := range failoverOmemRE.FindAllStringSubmatch(list, -1) {
		n, err := strconv.ParseInt(m[1], 10, 64)
		require.NoError(t, err)
		if least < 0 || n < least {
			least = n
		}
	}
	require.GreaterOrEqual(t, least, int64(0), "no replica connection in %q", list)
	return least
}

var failoverOmemRE = regexp.MustCompile(`\bomem=(\d+)`)

// String summarises the run by kind: what the running Exporter reported,
// and what the new master holds.
func (r *failoverRun) String() string {
	kinds := []string{"settled", "busy", "idle", "finishing", "late", "last"}
	var b strings.Builder
	lag := "replicas in sync"
	if r.stalled {
		lag = fmt.Sprintf("replicas frozen, %d KiB of replication still unsent at the kill", r.unsent>>10)
	}
	fmt.Fprintf(&b, "%s; failover %v after the kill; %d exports not seen ending by the first Exporter; WaitExport errors retried:",
		lag, r.tookOver.Round(time.Millisecond), r.stuck)
	if len(r.waitErrs) == 0 {
		b.WriteString(" none")
	} else {
		b.WriteString(strings.ReplaceAll(r.waitErrs.String(), "\n", "\n  "))
	}
	for _, kind := range kinds {
		var (
			n, before, kept, lost int
			after                 faultOutcomes
			seen                  = map[string]int{}
			first, last           time.Duration // of the ends reported after the kill, since the kill
		)
		for _, ex := range r.exports {
			if ex.kind != kind {
				continue
			}
			n++
			if ex.seenAt.After(r.killAt) {
				since := ex.seenAt.Sub(r.killAt)
				if first == 0 || since < first {
					first = since
				}
				last = max(last, since)
			}
			switch {
			case ex.completedBefore(r.killAt):
				before++
				if ex.final != nil && ex.final.Status == StatusCompleted {
					kept++
				}
			case ex.seenErr != nil:
				seen[faultErrorKind(ex.seenErr.Error())]++
			case ex.seen.Status != StatusCompleted:
				seen[string(ex.seen.Status)+" "+faultErrorKind(ex.seen.Error)]++
			default:
				seen["completed after the kill"]++
			}
			if ex.lost() {
				lost++
			} else if ex.final != nil {
				after.add(ex.final)
			}
		}
		fmt.Fprintf(&b, "\n  %-9s %2d: reported completed before the kill %d (still completed after: %d); otherwise reported %v",
			kind, n, before, kept, failoverSorted(seen))
		if last > 0 {
			fmt.Fprintf(&b, " %v to %v after the kill", first.Round(time.Millisecond), last.Round(time.Millisecond))
		}
		fmt.Fprintf(&b, ";\n               after the failover: %v, %d not found", after, lost)
	}
	return b.String()
}

// failoverSorted prints a count map in a stable order.
func failoverSorted(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%q: %d", k, m[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// TestFailover kills the master of a Sentinel group with one replica
// while exports run on an Exporter with the default MinReplicas (0): every
// export ends, or vanishes if it was created after the last write the
// replica received; none reads completed without exactly its bytes. The
// exports completed and replicated before the fault are intact; with a
// lagging replica, those reported completed meanwhile are lost, the
// documented price of asynchronous replication, which the test shows and
// logs. With a lease shorter than the failover, the exports under way
// fail instead of carrying on.
func TestFailover(t *testing.T) {
	tests := []struct {
		name  string
		stall bool
		lease time.Duration
	}{
		{failoverVariant(false), false, failoverLeaseTTL},
		{failoverVariant(true), true, failoverLeaseTTL},
		// The Exporter repeats a failed write for two thirds of LeaseTTL:
		// 1 s, less than the failover takes.
		{"lease shorter than the failover", false, 1500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{ChunkSize: faultChunk, LeaseTTL: tt.lease, MaxRunning: 64}
			run := failoverScenario(t, 1, cfg, tt.stall)
			var undone []string
			for _, ex := range run.exports {
				if ex.completedBefore(run.killAt) && (ex.final == nil || ex.final.Status != StatusCompleted) {
					what := "not found"
					if ex.final != nil {
						what = string(ex.final.Status) + " (" + ex.final.Error + ")"
					}
					undone = append(undone, fmt.Sprintf("%s export reported completed %v before the kill, now %s",
						ex.kind, run.killAt.Sub(ex.seenAt).Round(time.Millisecond), what))
				}
				if !tt.stall || run.unsent < failoverUnsent {
					continue
				}
				// Nothing waits for the frozen replica: these exports were
				// reported completed, and the failover lost the completion.
				switch ex.kind {
				case "last": // and its creation: gone
					require.NoError(t, ex.seenErr)
					require.Equal(t, StatusCompleted, ex.seen.Status, ex.seen.Error)
				case "finishing": // running on the new master until its lease lapsed
					require.NoError(t, ex.seenErr)
					require.Equal(t, StatusCompleted, ex.seen.Status, ex.seen.Error)
					require.True(t, ex.seenAt.Before(run.killAt))
					require.NotNil(t, ex.final)
					require.ErrorIs(t, ex.final.Err(), ErrWorkerLost)
				}
			}
			t.Logf("MinReplicas 0, 1 replica, LeaseTTL %v, %v", tt.lease, run)
			t.Logf("completions lost by the failover (the default's trade-off): %d\n  %s", len(undone), strings.Join(undone, "\n  "))
		})
	}
}

// TestFailoverMinReplicas is TestFailover with MinReplicas 1 and two
// replicas, so that one follows the new master: every export reported
// completed before the kill is completed, with its bytes, on the new
// master; with the replicas frozen, the last export, which no replica
// could acknowledge, is never reported completed.
func TestFailoverMinReplicas(t *testing.T) {
	cfg := Config{ChunkSize: faultChunk, LeaseTTL: failoverLeaseTTL, MaxRunning: 64,
		MinReplicas: 1, ReplicaTimeout: failoverReplicaTimeout}
	for _, stall := range []bool{false, true} {
		t.Run(failoverVariant(stall), func(t *testing.T) {
			run := failoverScenario(t, 2, cfg, stall)
			kept := 0
			for _, ex := range run.exports {
				if ex.completedBefore(run.killAt) {
					require.NotNil(t, ex.final, "%s export %s was reported completed before the kill and vanished", ex.kind, ex.id)
					require.Equal(t, StatusCompleted, ex.final.Status,
						"%s export %s was reported completed before the kill: %s", ex.kind, ex.id, ex.final.Error)
					kept++
				}
				if !stall || (ex.kind != "last" && ex.kind != "finishing") {
					continue
				}
				// No replica could acknowledge them: never reported completed.
				if ex.seenErr == nil {
					require.NotEqual(t, StatusCompleted, ex.seen.Status, "an export no replica acknowledged was reported completed")
					require.ErrorIs(t, ex.seen.Err(), ErrNotReplicated)
				} else {
					require.ErrorIs(t, ex.seenErr, context.DeadlineExceeded)
				}
				if ex.kind == "finishing" && run.unsent >= failoverUnsent {
					// Its failure was lost with the old master: it read
					// running on the new one until its lease lapsed.
					require.NotNil(t, ex.final)
					require.ErrorIs(t, ex.final.Err(), ErrWorkerLost)
				}
			}
			require.Positive(t, kept)
			t.Logf("MinReplicas 1, 2 replicas, %v", run)
		})
	}
}

func failoverVariant(stall bool) string {
	if stall {
		return "replicas lagging"
	}
	return "replicas in sync"
}

// failoverStallBeforeCompletion is a go-redis hook that stalls the
// replication (failoverStall) once, just before the client sends the
// pipeline that records an export's completion and WAITs for it: the
// replicas have acknowledged the export's bytes (the pipeline before), and
// will never receive the completion.
type failoverStallBeforeCompletion struct {
	stall func(ctx context.Context) error
	once  sync.Once
	err   error // of the stall, read after the export ended
	hit   atomic.Bool
}

func (h *failoverStallBeforeCompletion) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook sees the completing step: a write without chunks is one
// script call.
func (h *failoverStallBeforeCompletion) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.before(ctx, []redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (h *failoverStallBeforeCompletion) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.before(ctx, cmds)
		return next(ctx, cmds)
	}
}

// before stalls the replicas the first time cmds complete an export.
func (h *failoverStallBeforeCompletion) before(ctx context.Context, cmds []redis.Cmder) {
	if failoverCompletes(cmds) {
		h.once.Do(func() {
			h.hit.Store(true)
			h.err = h.stall(ctx)
		})
	}
}

// failoverCompletes reports whether cmds are the completing step of a
// replicated write: a script call whose final status is "completed", and
// no chunks (the chunks and the seal went before, acknowledged).
func failoverCompletes(cmds []redis.Cmder) bool {
	var completes bool
	for _, c := range cmds {
		switch strings.ToLower(c.Name()) {
		case "rpushx":
			return false
		case "evalsha", "eval":
			for _, a := range c.Args() {
				if a == string(StatusCompleted) {
					completes = true
				}
			}
		}
	}
	return completes
}

// TestFailoverMinReplicasCompletionNotAcknowledged: with MinReplicas 1,
// the replicas acknowledge an export's bytes and seal, then stall before
// they receive its completion, and the master dies. WaitExport reported
// the export completed before the kill, so the promise of MinReplicas is
// that it is still completed, with its bytes, on the new master: the new
// master has the seal and completes the job when its lease lapses.
func TestFailoverMinReplicasCompletionNotAcknowledged(t *testing.T) {
	faultNoLeaks(t)
	g := redistest.StartSentinelGroupT(t, 1, 3)
	const prefix = "failover-ack:"
	cfg := Config{ChunkSize: faultChunk, LeaseTTL: 2 * time.Second,
		MinReplicas: 1, ReplicaTimeout: failoverReplicaTimeout}
	ctx := failoverCtx(t)
	master, err := g.Master()
	require.NoError(t, err)
	admin := faultClient(t, master.Addr)
	hook := &failoverStallBeforeCompletion{stall: func(ctx context.Context) error { return failoverStall(ctx, g, admin) }}
	client := failoverClient(t, g)
	client.AddHook(hook)
	x := faultExporter(t, NewRedisStore(client).WithPrefix(prefix), cfg)

	data := randomBytes(3*faultChunk + 5)
	job, err := x.StartExport(ctx, alice, bytes.NewReader(data))
	require.NoError(t, err)
	reported := waitFor(t, x, alice, job.ID, StatusCompleted)
	require.True(t, hook.hit.Load(), "the completing write was not seen")
	require.NoError(t, hook.err)
	unsent := failoverUnsentBytes(t, admin)
	require.GreaterOrEqual(t, unsent, int64(failoverUnsent), "the replicas may have received the completion")
	acks, err := admin.Do(ctx, "WAIT", 1, 10).Int()
	require.NoError(t, err)
	require.Zero(t, acks, "a frozen replica acknowledged the completion")

	killAt := time.Now()
	_, err = g.KillMaster()
	require.NoError(t, err)
	for _, n := range g.Nodes[1:] {
		require.NoError(t, n.Thaw())
	}
	fctx, cancel := context.WithTimeout(ctx, failoverWithin)
	defer cancel()
	newMaster, err := g.WaitFailover(fctx)
	require.NoError(t, err)
	tookOver := time.Since(killAt)

	x2 := faultExporter(t, NewRedisStore(failoverClient(t, g)).WithPrefix(prefix), cfg)
	final, err := faultWaitTerminal(x2, job.ID, time.Now().Add(cfg.LeaseTTL+faultRetryWindow))
	require.NoError(t, err)
	t.Logf("reported %s before the kill (checksum %s); failover %v after the kill; %d KiB unsent; on the new master: %s %q",
		reported.Status, reported.Checksum[:15], tookOver.Round(time.Millisecond), unsent>>10, final.Status, final.Error)
	faultRequireOutcome(t, x2, NewRedisStore(faultClient(t, newMaster.Addr)).WithPrefix(prefix), final, data)
	require.Equal(t, StatusCompleted, final.Status,
		"an export reported completed with MinReplicas 1 is %s on the new master: %s", final.Status, final.Error)
}
