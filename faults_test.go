package exporter

// Real faults against real redis-server processes that each test starts for
// itself (the shared servers are never killed or paused): a SIGKILLed and
// restarted server, connections cut by a TCP proxy, replies lost after the
// server applied a write, and a server paused with CLIENT PAUSE. Every test
// uses the go-redis options the README asks for (ContextTimeoutEnabled) with
// short timeouts, and checks that no goroutine outlives it.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exporterkit/exporter/internal/faultproxy"
	"github.com/exporterkit/exporter/internal/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

const (
	faultChunk = 1024 // ChunkSize of the fault tests: small data spans many chunks
	// faultRetryWindow is how long after a fault ends (on top of LeaseTTL)
	// every export must have reached a terminal status.
	faultRetryWindow = 5 * time.Second
	// faultCallTimeout is the ctx timeout of the calls made during a fault,
	// and faultCallMargin how late past it they may return.
	faultCallTimeout = 500 * time.Millisecond
	faultCallMargin  = 250 * time.Millisecond
)

// faultNoLeaks checks, when the test and all its cleanups are done, that
// it left no goroutine behind. Call it first, so its cleanup runs last.
func faultNoLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		// A go-redis pool that failed to dial probes the server from a
		// goroutine of its own (pool.tryDial) that sleeps a second between
		// probes and sees the pool closed, or the server back, only when it
		// wakes: give it that long, but no more.
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
			if goleak.Find(opt) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		goleak.VerifyNone(t, opt)
	})
}

// faultClient returns a client with the options the README asks for and
// short timeouts, closed when the test ends. MaxRetries is the default.
func faultClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: true,
		DialTimeout:           500 * time.Millisecond,
		ReadTimeout:           time.Second,
		WriteTimeout:          time.Second,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// faultExporter returns an Exporter on store, shut down when the test ends
// (before the clients registered earlier are closed).
func faultExporter(t *testing.T, store Store, cfg Config) *Exporter {
	t.Helper()
	return newExporterT(t, store, cfg)
}

var errFaultSourceClosed = errors.New("source closed")

// faultSlowSource delivers data step bytes per Read, one Read every every; if
// hold is set, it stops at holdAt bytes until hold is closed. Close ends a
// waiting Read. It counts the bytes it delivered in sent, if set.
type faultSlowSource struct {
	data   []byte
	step   int
	every  time.Duration
	sent   *atomic.Int64
	hold   chan struct{}
	holdAt int

	off    int // used by the one reading goroutine only
	done   chan struct{}
	once   sync.Once
	closes atomic.Int32
}

func newFaultSlowSource(data []byte, step int, every time.Duration, sent *atomic.Int64) *faultSlowSource {
	return &faultSlowSource{data: data, step: step, every: every, sent: sent, done: make(chan struct{})}
}

func (s *faultSlowSource) Read(p []byte) (int, error) {
	if s.off >= len(s.data) {
		return 0, io.EOF
	}
	if s.hold != nil && s.off >= s.holdAt {
		select {
		case <-s.hold:
			s.hold = nil
		case <-s.done:
			return 0, errFaultSourceClosed
		}
	}
	t := time.NewTimer(s.every)
	defer t.Stop()
	select {
	case <-s.done:
		return 0, errFaultSourceClosed
	case <-t.C:
	}
	n := copy(p, s.data[s.off:min(s.off+s.step, len(s.data))])
	s.off += n
	if s.sent != nil {
		s.sent.Add(int64(n))
	}
	return n, nil
}

func (s *faultSlowSource) Close() error {
	s.closes.Add(1)
	s.once.Do(func() { close(s.done) })
	return nil
}

// faultGateSource delivers data only as far as the test released it, so the
// test decides which chunks each store write carries.
type faultGateSource struct {
	data  []byte
	gate  chan int
	off   int // the reading goroutine's
	avail int // the reading goroutine's
	done  chan struct{}
	once  sync.Once
}

func newFaultGateSource(data []byte) *faultGateSource {
	return &faultGateSource{data: data, gate: make(chan int, 64), done: make(chan struct{})}
}

// release lets n more bytes through.
func (s *faultGateSource) release(n int) { s.gate <- n }

func (s *faultGateSource) Read(p []byte) (int, error) {
	if s.off >= len(s.data) {
		return 0, io.EOF
	}
	for s.avail == 0 {
		select {
		case n := <-s.gate:
			s.avail += n
		case <-s.done:
			return 0, errFaultSourceClosed
		}
	}
	n := copy(p, s.data[s.off:min(s.off+s.avail, len(s.data))])
	s.off += n
	s.avail -= n
	return n, nil
}

func (s *faultGateSource) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

// faultWatchedStore is a Store that tracks the Writes passing through it.
type faultWatchedStore struct {
	Store
	inFlight atomic.Int32 // Writes not returned yet
	finished atomic.Int64 // Writes returned
	mu       sync.Mutex
	lastErr  error // of the last Write returned
}

func (w *faultWatchedStore) Write(ctx context.Context, id string, lease Lease, cw ChunkWrite) error {
	w.inFlight.Add(1)
	err := w.Store.Write(ctx, id, lease, cw)
	w.mu.Lock()
	w.lastErr = err
	w.mu.Unlock()
	w.finished.Add(1)
	w.inFlight.Add(-1)
	return err
}

func (w *faultWatchedStore) lastWriteErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastErr
}

// faultTimedCall runs call with a ctx of faultCallTimeout and returns its error
// and how long it took.
func faultTimedCall(call func(ctx context.Context) error) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), faultCallTimeout)
	defer cancel()
	start := time.Now()
	err := call(ctx)
	return time.Since(start), err
}

// faultCall is one Exporter call made during a fault.
type faultCall struct {
	name string
	call func(ctx context.Context) error
}

// faultCalls are one call of each kind, made by the fault tests while
// Redis cannot answer: the status of statusOf, a wait for waitFor, a cancel
// of victim, a download of the completed export done, and start.
func faultCalls(x *Exporter, statusOf, waitFor, victim, done string, start func(context.Context) error) []faultCall {
	return []faultCall{
		{"GetExportStatus", func(ctx context.Context) error {
			_, err := x.GetExportStatus(ctx, alice, statusOf)
			return err
		}},
		{"StartExport", start},
		{"CancelExport", func(ctx context.Context) error {
			_, err := x.CancelExport(ctx, alice, victim)
			return err
		}},
		{"OpenExport", func(ctx context.Context) error {
			_, err := faultDownload(ctx, x, done)
			return err
		}},
		{"WaitExport", func(ctx context.Context) error {
			_, err := x.WaitExport(ctx, alice, waitFor)
			return err
		}},
	}
}

// faultCallRound makes every call at once, each with a ctx of
// faultCallTimeout, and returns their durations and errors by name.
func faultCallRound(calls []faultCall) (map[string]time.Duration, map[string]error) {
	took := make(map[string]time.Duration, len(calls))
	errs := make(map[string]error, len(calls))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := faultTimedCall(c.call)
			mu.Lock()
			took[c.name], errs[c.name] = d, err
			mu.Unlock()
		}()
	}
	wg.Wait()
	return took, errs
}

// faultLatencies collects call durations by call name, for the test's report.
type faultLatencies map[string][]time.Duration

func (l faultLatencies) String() string {
	names := make([]string, 0, len(l))
	for name := range l {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		ds := l[name]
		sorted := append([]time.Duration(nil), ds...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
		fmt.Fprintf(&b, "\n  %-16s n=%d min=%v max=%v", name, len(ds),
			sorted[0].Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond))
	}
	return b.String()
}

// faultErrors collects the distinct errors of calls, for the test's report.
type faultErrors map[string]struct{}

func (k faultErrors) add(err error) {
	if err != nil {
		k[faultErrorKind(err.Error())] = struct{}{}
	}
}

func (k faultErrors) String() string {
	var all []string
	for e := range k {
		all = append(all, e)
	}
	sort.Strings(all)
	return "\n  " + strings.Join(all, "\n  ")
}

// faultDownload reads export id in full through x, verified (io.ReadAll reads
// sequentially from offset 0).
func faultDownload(ctx context.Context, x *Exporter, id string) ([]byte, error) {
	d, err := x.OpenExport(ctx, alice, id)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return io.ReadAll(d)
}

// faultWaitTerminal waits through x for job id to reach a terminal status until
// deadline, retrying the errors of a Redis that is coming back. It is safe
// to call from any goroutine.
func faultWaitTerminal(x *Exporter, id string, deadline time.Time) (*Job, error) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for {
		job, err := x.WaitExport(ctx, alice, id)
		switch {
		case err == nil:
			return job, nil
		case errors.Is(err, ErrNotFound), ctx.Err() != nil:
			return nil, err
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// faultWaitStored waits until every job of ids has stored at least n
// bytes, as store reads them.
func faultWaitStored(t *testing.T, store Store, ids []string, n int64) {
	t.Helper()
	ctx := testCtx(t)
	require.Eventually(t, func() bool {
		for _, id := range ids {
			if j, err := store.Get(ctx, id, ""); err != nil || j.Bytes < n {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond, "the exports never stored %d bytes each", n)
}

// faultIDs returns the id of each export, as id reads it.
func faultIDs[E any](exports []E, id func(E) string) []string {
	out := make([]string, len(exports))
	for i, ex := range exports {
		out[i] = id(ex)
	}
	return out
}

// faultRequireOutcome checks a terminal job of the fault tests: completed with
// exactly data (by its checksum, a verified download through x, and the
// stored chunks when store is not nil), or failed with a reason and its
// data removed.
func faultRequireOutcome(t *testing.T, x *Exporter, store Store, job *Job, data []byte) {
	t.Helper()
	ctx := testCtx(t)
	switch job.Status {
	case StatusCompleted:
		require.Equal(t, checksum(data), job.Checksum, "job %s: completed with the checksum of other bytes", job.ID)
		require.Equal(t, int64(len(data)), job.Bytes)
		if store != nil {
			chunks, err := store.ReadChunks(ctx, job.ID, 0, len(data)/faultChunk+100)
			require.NoError(t, err)
			require.Empty(t, faultChunksDiff(faultSplit(data), chunks), "job %s: completed, but its stored chunks differ from the input's", job.ID)
		}
		got, err := faultDownload(ctx, x, job.ID)
		require.NoError(t, err, "job %s: completed but its download fails", job.ID)
		require.True(t, bytes.Equal(data, got), "job %s: download differs from the input", job.ID)
	case StatusFailed:
		require.NotEmpty(t, job.Error, "job %s failed without a reason", job.ID)
		require.Empty(t, job.Checksum)
		if store != nil {
			chunks, err := store.ReadChunks(ctx, job.ID, 0, 100)
			require.NoError(t, err)
			require.Empty(t, chunks, "job %s: a failed export's data is removed", job.ID)
		}
	default:
		t.Fatalf("job %s ended %s (%s), want completed or failed", job.ID, job.Status, job.Error)
	}
}

// faultChunksDiff describes how got differs from want, or returns "".
func faultChunksDiff(want, got [][]byte) string {
	var diffs []string
	for i := range max(len(want), len(got)) {
		switch {
		case i >= len(want):
			diffs = append(diffs, fmt.Sprintf("extra chunk %d (%d bytes)%s", i, len(got[i]), faultCopyOf(want, got[i])))
		case i >= len(got):
			diffs = append(diffs, fmt.Sprintf("chunk %d missing", i))
		case !bytes.Equal(want[i], got[i]):
			diffs = append(diffs, fmt.Sprintf("chunk %d differs%s", i, faultCopyOf(want, got[i])))
		}
	}
	if diffs == nil {
		return ""
	}
	return fmt.Sprintf("%d chunks stored, %d expected: %s", len(got), len(want), strings.Join(diffs, "; "))
}

// faultCopyOf says which of want's chunks c repeats, if any.
func faultCopyOf(want [][]byte, c []byte) string {
	for i, w := range want {
		if bytes.Equal(w, c) {
			return fmt.Sprintf(", a copy of chunk %d", i)
		}
	}
	return ""
}

// faultSplit cuts data into chunks of faultChunk bytes, as the Exporter
// stores them.
func faultSplit(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		n := min(faultChunk, len(data))
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

// faultRequireTTLs fails unless every key under prefix has a TTL.
func faultRequireTTLs(t *testing.T, admin *redis.Client, prefix string) {
	t.Helper()
	ctx := testCtx(t)
	keys, err := admin.Keys(ctx, prefix+"*").Result()
	require.NoError(t, err)
	for _, k := range keys {
		ttl, err := admin.PTTL(ctx, k).Result()
		require.NoError(t, err)
		require.NotEqual(t, time.Duration(-1), ttl, "key %s has no TTL", k)
	}
}

// faultOutcomes counts terminal statuses and failure reasons for a report.
type faultOutcomes struct {
	completed, failed int
	reasons           map[string]int
}

func (o *faultOutcomes) add(job *Job) {
	switch job.Status {
	case StatusCompleted:
		o.completed++
	case StatusFailed:
		o.failed++
		if o.reasons == nil {
			o.reasons = make(map[string]int)
		}
		o.reasons[faultErrorKind(job.Error)]++
	}
}

func (o faultOutcomes) String() string {
	return fmt.Sprintf("%d completed, %d failed %v", o.completed, o.failed, o.reasons)
}

// faultErrorKind replaces the ids and numbers in an error's text, so that
// errors are counted by kind.
func faultErrorKind(text string) string {
	text = faultIDRE.ReplaceAllString(text, "<id>")
	return faultNumberRE.ReplaceAllString(text, "<n>")
}

var (
	faultIDRE     = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	faultNumberRE = regexp.MustCompile(`\b\d+\b`)
)

// TestRedisKilledAndRestarted SIGKILLs the Redis server, which persists
// every write (appendfsync always), while 50 exports run, and restarts it on
// the same port, at once (within go-redis's retries) or after longer than
// LeaseTTL: every export reaches a terminal status within LeaseTTL plus a
// retry window; a completed one holds exactly its input; and the exports
// completed before the kill are intact.
func TestRedisKilledAndRestarted(t *testing.T) {
	for _, down := range []time.Duration{0, 300 * time.Millisecond, 1500 * time.Millisecond} {
		t.Run(fmt.Sprintf("down %v", down), func(t *testing.T) { testFaultRedisKilled(t, down) })
	}
}

func testFaultRedisKilled(t *testing.T, down time.Duration) {
	faultNoLeaks(t)
	srv := redistest.StartT(t, redistest.Options{Args: []string{"--appendonly", "yes", "--appendfsync", "always"}})
	const prefix = "kill:"
	cfg := Config{ChunkSize: faultChunk, LeaseTTL: time.Second, MaxRunning: 64}
	x := faultExporter(t, NewRedisStore(faultClient(t, srv.Addr)).WithPrefix(prefix), cfg)
	ctx := testCtx(t)

	before := make(map[string][]byte)
	for i := range 5 {
		data := randomBytes(1 + i*3*faultChunk)
		job, err := x.StartExport(ctx, alice, bytes.NewReader(data))
		require.NoError(t, err)
		job = waitFor(t, x, alice, job.ID, StatusCompleted)
		require.Equal(t, checksum(data), job.Checksum)
		before[job.ID] = data
	}

	const n = 50
	var sent atomic.Int64
	type export struct {
		id   string
		data []byte
		src  *faultSlowSource
	}
	exports := make([]export, n)
	for i := range exports {
		data := randomBytes(30*faultChunk + i*37)
		src := newFaultSlowSource(data, faultChunk, 20*time.Millisecond, &sent)
		job, err := x.StartExport(ctx, alice, src)
		require.NoError(t, err)
		exports[i] = export{id: job.ID, data: data, src: src}
	}
	// Mid-way: about a third of the bytes read.
	require.Eventually(t, func() bool { return sent.Load() >= n*10*faultChunk }, 15*time.Second, time.Millisecond)
	require.NoError(t, srv.Kill())
	killed := time.Now()
	time.Sleep(down)
	require.NoError(t, srv.Restart())
	restarted := time.Now()

	deadline := restarted.Add(cfg.LeaseTTL + faultRetryWindow)
	jobs := make([]*Job, n)
	errs := make([]error, n)
	took := make([]time.Duration, n)
	var wg sync.WaitGroup
	for i, ex := range exports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			jobs[i], errs[i] = faultWaitTerminal(x, ex.id, deadline)
			took[i] = time.Since(restarted)
		}()
	}
	wg.Wait()

	// Another instance, on a client that never saw the old server, checks.
	admin := faultClient(t, srv.Addr)
	x2 := faultExporter(t, NewRedisStore(faultClient(t, srv.Addr)).WithPrefix(prefix), cfg)
	store2 := NewRedisStore(admin).WithPrefix(prefix)
	var out faultOutcomes
	var slowest time.Duration
	for i, ex := range exports {
		require.NoError(t, errs[i], "export %d (%s) did not reach a terminal status by the deadline", i, ex.id)
		faultRequireOutcome(t, x2, store2, jobs[i], ex.data)
		out.add(jobs[i])
		slowest = max(slowest, took[i])
	}
	for id, data := range before {
		job, err := x2.GetExportStatus(ctx, alice, id)
		require.NoError(t, err, "an export completed before the kill is gone")
		require.Equal(t, StatusCompleted, job.Status)
		require.Equal(t, checksum(data), job.Checksum)
		got, err := faultDownload(ctx, x2, id)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got), "an export completed before the kill changed")
	}

	require.NoError(t, x.Shutdown(ctx))
	for i, ex := range exports {
		require.Equal(t, int32(1), ex.src.closes.Load(), "export %d: source closes", i)
	}
	faultRequireTTLs(t, admin, prefix)
	t.Logf("redis down %v (kill to restart); exports: %v; all terminal %v after the restart",
		restarted.Sub(killed).Round(time.Millisecond), out, slowest.Round(time.Millisecond))
}

// TestConnectionsCut cuts every connection between the Exporter and Redis
// for 2 s: calls made meanwhile return errors, not ErrNotFound, by their
// context's deadline; running exports complete with their input or fail
// cleanly; after the cut new exports work.
func TestConnectionsCut(t *testing.T) {
	faultNoLeaks(t)
	srv := redistest.StartT(t, redistest.Options{})
	proxy := faultproxy.StartT(t, srv.Addr)
	const prefix = "cut:"
	admin := faultClient(t, srv.Addr)
	adminStore := NewRedisStore(admin).WithPrefix(prefix)
	// A 3 s lease outlives the 2 s cut, so exports that do not write during
	// it may carry on.
	cfg := Config{ChunkSize: faultChunk, LeaseTTL: 3 * time.Second, MaxRunning: 32}
	x := faultExporter(t, NewRedisStore(faultClient(t, proxy.Addr())).WithPrefix(prefix), cfg)
	ctx := testCtx(t)

	doneData := randomBytes(5*faultChunk + 1)
	done, err := x.StartExport(ctx, alice, bytes.NewReader(doneData))
	require.NoError(t, err)
	waitFor(t, x, alice, done.ID, StatusCompleted)

	// Busy exports write every 25 ms through the cut; idle ones wait, their
	// worker alive, from before the cut until after it.
	type export struct {
		id   string
		data []byte
		src  *faultSlowSource
		busy bool
	}
	var exports []export
	hold := make(chan struct{})
	for i := range 16 {
		data := randomBytes(100*faultChunk + i)
		src := newFaultSlowSource(data, faultChunk, 25*time.Millisecond, nil)
		busy := i%2 == 0
		if !busy {
			src.hold, src.holdAt, src.every = hold, 3*faultChunk, time.Millisecond
		}
		job, err := x.StartExport(ctx, alice, src)
		require.NoError(t, err)
		exports = append(exports, export{id: job.ID, data: data, src: src, busy: busy})
	}
	victimSrc := newFaultSlowSource(randomBytes(100*faultChunk), faultChunk, 25*time.Millisecond, nil)
	victim, err := x.StartExport(ctx, alice, victimSrc)
	require.NoError(t, err)
	faultWaitStored(t, adminStore, faultIDs(exports, func(ex export) string { return ex.id }), 3*faultChunk)

	proxy.Cut()
	cutAt := time.Now()
	lat, kinds := faultLatencies{}, faultErrors{}
	calls := faultCalls(x, done.ID, exports[0].id, victim.ID, done.ID, func(ctx context.Context) error {
		src := newFaultSlowSource(randomBytes(faultChunk), faultChunk, time.Millisecond, nil)
		_, err := x.StartExport(ctx, alice, src)
		if err != nil && src.closes.Load() != 1 {
			return fmt.Errorf("source closed %d times after a failed start", src.closes.Load())
		}
		return err
	})
	// Three rounds, all calls at once in each, well inside the 2 s cut.
	for round := range 3 {
		time.Sleep(time.Until(cutAt.Add(time.Duration(round) * 600 * time.Millisecond)))
		took, errs := faultCallRound(calls)
		for _, c := range calls {
			lat[c.name] = append(lat[c.name], took[c.name])
			err := errs[c.name]
			kinds.add(err)
			require.Error(t, err, "%s succeeded while every connection is cut", c.name)
			require.NotErrorIs(t, err, ErrNotFound, "%s during the cut", c.name)
			require.LessOrEqual(t, took[c.name], faultCallTimeout+faultCallMargin, "%s returned late: %v", c.name, err)
		}
	}
	require.Less(t, time.Since(cutAt), 2*time.Second, "the calls ran past the cut")
	time.Sleep(time.Until(cutAt.Add(2 * time.Second)))
	proxy.Restore()
	restored := time.Now()
	close(hold)

	deadline := restored.Add(cfg.LeaseTTL + faultRetryWindow)
	var busy, idle faultOutcomes
	for _, ex := range exports {
		job, err := faultWaitTerminal(x, ex.id, deadline)
		require.NoError(t, err, "export %s did not reach a terminal status by the deadline", ex.id)
		faultRequireOutcome(t, x, adminStore, job, ex.data)
		if ex.busy {
			busy.add(job)
		} else {
			idle.add(job)
		}
	}
	job, err := faultWaitTerminal(x, victim.ID, deadline)
	require.NoError(t, err)
	require.True(t, job.Status.Terminal())

	// New exports work.
	for range 3 {
		data := randomBytes(7*faultChunk + 3)
		job, err := x.StartExport(ctx, alice, bytes.NewReader(data))
		require.NoError(t, err)
		job, err = faultWaitTerminal(x, job.ID, time.Now().Add(10*time.Second))
		require.NoError(t, err)
		require.Equal(t, StatusCompleted, job.Status, job.Error)
		faultRequireOutcome(t, x, adminStore, job, data)
	}
	faultRequireTTLs(t, admin, prefix)
	t.Logf("cut 2s: busy exports %v; idle exports %v; proxy %+v; calls during the cut (ctx %v):%v\nerrors:%v",
		busy, idle, proxy.Stats(), faultCallTimeout, lat, kinds)
}

// faultRetryCase is one iteration of the retried-write tests: the reply of one
// store write is dropped after Redis applied it, then the connections are
// cut, so go-redis sends the write again on a new connection.
type faultRetryCase struct {
	name   string
	final  bool          // drop the reply of the write that completes the export
	gap    time.Duration // how long new connections are refused after the cut
	noCut  bool          // no cut: the client's ReadTimeout ends the wait, and go-redis retries
	flush  bool          // SCRIPT FLUSH while the reply is lost: the retry meets NOSCRIPT, as after a restart
	atOnce bool          // release the chunks after the dropped write all at once (not one write each)
}

// faultRetryRig is what the iterations share: a server, a proxy, an Exporter
// behind it and an admin client beside it.
type faultRetryRig struct {
	proxy      *faultproxy.Proxy
	admin      *redis.Client
	adminStore *RedisStore
	watch      *faultWatchedStore
	x          *Exporter
	prefix     string
}

func newFaultRetryRig(t *testing.T) *faultRetryRig {
	t.Helper()
	srv := redistest.StartT(t, redistest.Options{})
	r := &faultRetryRig{proxy: faultproxy.StartT(t, srv.Addr), admin: faultClient(t, srv.Addr), prefix: "retry:"}
	r.adminStore = NewRedisStore(r.admin).WithPrefix(r.prefix)
	r.watch = &faultWatchedStore{Store: NewRedisStore(faultClient(t, r.proxy.Addr())).WithPrefix(r.prefix)}
	r.x = faultExporter(t, r.watch, Config{ChunkSize: faultChunk, LeaseTTL: 2 * time.Second})
	return r
}

// rpushxCalls returns how many RPUSHX the server has run.
func (r *faultRetryRig) rpushxCalls(t *testing.T) int {
	t.Helper()
	info, err := r.admin.Info(testCtx(t), "commandstats").Result()
	require.NoError(t, err)
	m := regexp.MustCompile(`cmdstat_rpushx:calls=(\d+)`).FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return n
}

// storedBytes returns the job's recorded Bytes and status, read directly.
func (r *faultRetryRig) stored(t *testing.T, id string) (int64, Status) {
	t.Helper()
	h, err := r.admin.HMGet(testCtx(t), r.adminStore.keys(id)[0], fBytes, fStatus).Result()
	require.NoError(t, err)
	b, _ := h[0].(string)
	s, _ := h[1].(string)
	n, _ := strconv.ParseInt(b, 10, 64)
	return n, Status(s)
}

// waitStored waits until the job's recorded Bytes reach n and no write is
// in flight.
func (r *faultRetryRig) waitStored(t *testing.T, id string, n int64) {
	t.Helper()
	require.Eventually(t, func() bool {
		b, _ := r.stored(t, id)
		return b == n && r.watch.inFlight.Load() == 0
	}, 10*time.Second, time.Millisecond, "job %s never stored %d bytes", id, n)
}

// run runs one iteration and reports whether the dropped reply hit a write
// that Redis had applied, and the job as it ended.
func (r *faultRetryRig) run(t *testing.T, tc faultRetryCase) (hit bool, job *Job) {
	t.Helper()
	ctx := testCtx(t)
	const full = 8 // full chunks; a ninth, partial one ends the export
	data := randomBytes(full*faultChunk + faultChunk/2)
	src := newFaultGateSource(data)
	job, err := r.x.StartExport(ctx, alice, src)
	require.NoError(t, err)
	id := job.ID

	// Chunks stored before the dropped write.
	pre := 2
	if tc.final {
		pre = full
	}
	src.release(pre * faultChunk)
	r.waitStored(t, id, int64(pre*faultChunk))

	calls0, dropped0, finished0 := r.rpushxCalls(t), r.proxy.Stats().BytesDropped, r.watch.finished.Load()
	r.proxy.DropReplies(true)
	want := int64((pre + 1) * faultChunk)
	if tc.final {
		src.release(faultChunk / 2)
		want = int64(len(data))
	} else {
		src.release(faultChunk)
	}
	// Redis applies the write; its reply is dropped, so the Write is still
	// waiting for it.
	applied := false
	require.Eventually(t, func() bool {
		b, st := r.stored(t, id)
		applied = b == want && (!tc.final || st == StatusCompleted)
		return applied || r.watch.finished.Load() > finished0
	}, 10*time.Second, time.Millisecond)
	waiting := applied && r.watch.finished.Load() == finished0 && r.watch.inFlight.Load() > 0
	require.Eventually(t, func() bool { return r.proxy.Stats().BytesDropped > dropped0 }, 5*time.Second, time.Millisecond)
	if tc.flush {
		require.NoError(t, r.admin.ScriptFlush(ctx).Err())
	}
	r.proxy.DropReplies(false)
	if !tc.noCut {
		r.proxy.Cut()
		time.Sleep(tc.gap)
		r.proxy.Restore()
	}
	require.Eventually(t, func() bool { return r.watch.finished.Load() > finished0 }, 10*time.Second, time.Millisecond,
		"the write whose reply was lost never returned")
	writeErr := r.watch.lastWriteErr()
	// A write is a transaction, which go-redis does not repeat after a lost
	// reply (it cannot know whether EXEC ran): the Exporter repeats it when
	// the error may pass.
	repeated := writeErr == nil || r.x.retryable(writeErr)
	hit = waiting && repeated

	if !tc.final {
		rest := len(data) - (pre+1)*faultChunk
		if tc.atOnce {
			src.release(rest)
		} else {
			// One chunk per write: wait for each, unless the export ended.
			for i := pre + 1; i <= full; i++ {
				n := min(faultChunk, len(data)-i*faultChunk)
				src.release(n)
				require.Eventually(t, func() bool {
					b, st := r.stored(t, id)
					return (b == int64(i*faultChunk+n) && r.watch.inFlight.Load() == 0) || st.Terminal()
				}, 10*time.Second, time.Millisecond)
			}
		}
	}
	job, err = faultWaitTerminal(r.x, id, time.Now().Add(10*time.Second))
	require.NoError(t, err)
	t.Logf("%s: dropped write applied and waiting: %v; its result: %v; RPUSHX run %d times; ended %s %s",
		tc.name, waiting, writeErr, r.rpushxCalls(t)-calls0, job.Status, job.Error)
	faultRequireOutcome(t, r.x, r.adminStore, job, data)
	if writeErr == nil {
		// go-redis repeated the write and it succeeded, and no other fault
		// followed: a repeated write is harmless, so the export completes.
		// (A write the Exporter repeats may run out of its window while the
		// connections are refused: the export then fails cleanly.)
		require.Equal(t, StatusCompleted, job.Status, "the retried write succeeded, yet the export failed")
	}
	return hit, job
}

// TestRetriedWritesStoredOnce loses the reply of a chunk write that Redis
// applied, then cuts the connection so that the write is sent again (by
// the Exporter: go-redis does not repeat a transaction): the
// completed export holds each chunk once, in order, or the export failed
// cleanly. Among the iterations, at least one must have had its applied
// write retried and completed.
func TestRetriedWritesStoredOnce(t *testing.T) {
	faultNoLeaks(t)
	r := newFaultRetryRig(t)
	cases := []faultRetryCase{
		{name: "mid, cut"},
		{name: "mid, cut, then a batch", atOnce: true},
		{name: "mid, cut, refused 5ms", gap: 5 * time.Millisecond},
		{name: "mid, cut, refused 20ms", gap: 20 * time.Millisecond, atOnce: true},
		{name: "mid, read timeout", noCut: true},
		{name: "final, cut", final: true},
		{name: "final, cut, refused 10ms", final: true, gap: 10 * time.Millisecond},
		{name: "final, read timeout", final: true, noCut: true},
		{name: "mid, cut, refused past the retries", gap: 800 * time.Millisecond},
		{name: "final, cut, refused past the retries", final: true, gap: 800 * time.Millisecond},
	}
	hits := 0
	var out faultOutcomes
	for _, tc := range cases {
		hit, job := r.run(t, tc)
		out.add(job)
		if hit && job.Status == StatusCompleted {
			hits++
		}
	}
	t.Logf("%d of %d iterations retried an applied write and completed; %v; proxy %+v",
		hits, len(cases), out, r.proxy.Stats())
	require.Positive(t, hits, "no iteration retried a write that Redis had applied")
}

// TestRetriedWritesAfterScriptFlush is TestRetriedWritesStoredOnce with the
// script cache emptied while the reply is lost, as a restarted server has
// it: the retry meets NOSCRIPT, RedisStore loads the script and sends the
// chunks once more.
func TestRetriedWritesAfterScriptFlush(t *testing.T) {
	faultNoLeaks(t)
	r := newFaultRetryRig(t)
	cases := []faultRetryCase{
		{name: "mid, one chunk per write after", flush: true},
		{name: "mid, a batch after", flush: true, atOnce: true},
		{name: "final", flush: true, final: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { r.run(t, tc) })
	}
}

// TestRedisPaused pauses every Redis client for 3 s (CLIENT PAUSE ALL)
// while exports run on an Exporter whose LeaseTTL is 5 s: calls made
// meanwhile return by their context's deadline with an error wrapping
// context.DeadlineExceeded; the running exports, whose worker is alive, are
// not failed and complete once Redis answers again.
func TestRedisPaused(t *testing.T) {
	faultNoLeaks(t)
	srv := redistest.StartT(t, redistest.Options{})
	const prefix = "pause:"
	admin := faultClient(t, srv.Addr)
	adminStore := NewRedisStore(admin).WithPrefix(prefix)
	cfg := Config{ChunkSize: faultChunk, LeaseTTL: 5 * time.Second}
	x := faultExporter(t, NewRedisStore(faultClient(t, srv.Addr)).WithPrefix(prefix), cfg)
	ctx := testCtx(t)

	doneData := randomBytes(3*faultChunk + 5)
	done, err := x.StartExport(ctx, alice, bytes.NewReader(doneData))
	require.NoError(t, err)
	waitFor(t, x, alice, done.ID, StatusCompleted)

	type export struct {
		id   string
		data []byte
	}
	var exports []export
	for i := range 8 {
		data := randomBytes(100*faultChunk + i)
		job, err := x.StartExport(ctx, alice, newFaultSlowSource(data, faultChunk, 20*time.Millisecond, nil))
		require.NoError(t, err)
		exports = append(exports, export{id: job.ID, data: data})
	}
	// Calls during the pause may still be applied when it ends: this one
	// is theirs to cancel.
	victim, err := x.StartExport(ctx, alice, newFaultSlowSource(randomBytes(200*faultChunk), faultChunk, 20*time.Millisecond, nil))
	require.NoError(t, err)
	faultWaitStored(t, adminStore, faultIDs(exports, func(ex export) string { return ex.id }), 10*faultChunk)

	require.NoError(t, admin.Do(ctx, "CLIENT", "PAUSE", "3000", "ALL").Err())
	pausedAt := time.Now()
	lat, kinds := faultLatencies{}, faultErrors{}
	calls := faultCalls(x, exports[0].id, exports[0].id, victim.ID, done.ID, func(ctx context.Context) error {
		_, err := x.StartExport(ctx, alice, bytes.NewReader(randomBytes(10)))
		return err
	})
	// Two rounds, all calls at once in each, well inside the 3 s pause.
	for round := range 2 {
		time.Sleep(time.Until(pausedAt.Add(time.Duration(round) * time.Second)))
		took, errs := faultCallRound(calls)
		for _, c := range calls {
			lat[c.name] = append(lat[c.name], took[c.name])
			err := errs[c.name]
			kinds.add(err)
			require.ErrorIs(t, err, context.DeadlineExceeded, "%s during the pause", c.name)
			require.NotErrorIs(t, err, ErrNotFound, "%s during the pause", c.name)
			require.LessOrEqual(t, took[c.name], faultCallTimeout+faultCallMargin, "%s returned late", c.name)
		}
	}
	require.Less(t, time.Since(pausedAt), 2500*time.Millisecond, "the calls ran past the pause")

	var out faultOutcomes
	for _, ex := range exports {
		job, err := faultWaitTerminal(x, ex.id, pausedAt.Add(3*time.Second+faultRetryWindow))
		require.NoError(t, err)
		require.Equal(t, StatusCompleted, job.Status, "a healthy export was failed: %s", job.Error)
		faultRequireOutcome(t, x, adminStore, job, ex.data)
		out.add(job)
	}
	// Whether the cancels sent during the pause took effect after it; then
	// end the victim, which would run for seconds more.
	job, err := x.GetExportStatus(ctx, alice, victim.ID)
	require.NoError(t, err)
	late := job.Status
	if !late.Terminal() {
		_, err = x.CancelExport(ctx, alice, victim.ID)
		require.NoError(t, err)
	}
	job, err = faultWaitTerminal(x, victim.ID, time.Now().Add(cfg.LeaseTTL+faultRetryWindow))
	require.NoError(t, err)
	require.True(t, job.Status.Terminal())
	t.Logf("paused 3s: exports %v; victim of the paused cancels: %s after the pause; calls during the pause (ctx %v):%v\nerrors:%v",
		out, late, faultCallTimeout, lat, kinds)
}

// TestWaitRidesOutAnOutage: a WaitExport and a WatchExport that began
// before a cut of their connections, during which the export they follow
// completes on another instance (whose connections are fine), return that
// end once the connections are back, instead of the error of a re-read
// made during the cut.
func TestWaitRidesOutAnOutage(t *testing.T) {
	faultNoLeaks(t)
	srv := redistest.StartT(t, redistest.Options{})
	proxy := faultproxy.StartT(t, srv.Addr)
	const prefix = "ride:"
	// A short lease makes the waiters re-read every 250 ms, several times
	// during the cut.
	cfg := Config{ChunkSize: faultChunk, LeaseTTL: time.Second}
	runner := faultExporter(t, NewRedisStore(faultClient(t, srv.Addr)).WithPrefix(prefix), cfg)
	waiterStore := &readCounter{Store: NewRedisStore(faultClient(t, proxy.Addr())).WithPrefix(prefix)}
	waiter := faultExporter(t, waiterStore, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	data := randomBytes(3*faultChunk + 5)
	src := newFeedSource(data[:faultChunk])
	job, err := runner.StartExport(ctx, alice, src)
	require.NoError(t, err)
	waitStatus(t, runner, alice, job.ID, StatusRunning)

	type result struct {
		job *Job
		err error
	}
	waited, watched, waitedStopped := make(chan result, 1), make(chan result, 1), make(chan result, 1)
	first := make(chan struct{})
	go func() {
		j, err := waiter.WaitExport(ctx, alice, job.ID)
		waited <- result{j, err}
	}()
	// Its first read is done (an error there is returned, by design):
	// what the cut meets are re-reads.
	require.Eventually(t, func() bool { return waiterStore.reads.Load() > 0 }, 10*time.Second, time.Millisecond)
	// After Shutdown, WaitExport subscribes for itself: its first
	// subscription fails, and the next ones during the cut.
	subscribed := &subscribeSignal{Store: NewRedisStore(faultClient(t, proxy.Addr())).WithPrefix(prefix), done: make(chan struct{})}
	stopped := faultExporter(t, subscribed, cfg)
	require.NoError(t, stopped.Shutdown(ctx))
	go func() {
		j, err := stopped.WaitExport(ctx, alice, job.ID)
		waitedStopped <- result{j, err}
	}()
	<-subscribed.done
	go func() {
		var r result
		for j, err := range waiter.WatchExport(ctx, alice, job.ID, WatchEvery(10*time.Millisecond)) {
			if r.job == nil && err == nil {
				close(first)
			}
			if err != nil {
				r.err = err
				break
			}
			r.job = j
		}
		watched <- r
	}()
	select { // the first reads are done: what follows are re-reads
	case <-first:
	case r := <-watched:
		t.Fatalf("WatchExport ended at once: %v, %v", r.job, r.err)
	}

	proxy.Cut()
	cutAt := time.Now()
	src.feed(data[faultChunk:])
	src.end(nil)
	require.Equal(t, StatusCompleted, waitFor(t, runner, alice, job.ID, StatusCompleted).Status)
	time.Sleep(time.Until(cutAt.Add(1500 * time.Millisecond))) // the cut lasts 1.5 s
	select {
	case r := <-waited:
		t.Fatalf("WaitExport returned during the cut: %v, %v", r.job, r.err)
	case r := <-waitedStopped:
		t.Fatalf("WaitExport after Shutdown returned during the cut: %v, %v", r.job, r.err)
	case r := <-watched:
		t.Fatalf("WatchExport ended during the cut: %v, %v", r.job, r.err)
	default:
	}
	require.Greater(t, proxy.Stats().Refused, int64(0), "nobody tried to reach the server during the cut")
	proxy.Restore()

	for _, ch := range []chan result{waited, watched, waitedStopped} {
		r := <-ch
		require.NoError(t, r.err)
		require.Equal(t, StatusCompleted, r.job.Status)
		require.Equal(t, int64(len(data)), r.job.Bytes)
	}
}

// subscribeSignal is a Store whose first Subscribe fails, as on a
// connection that dropped, and closes done.
// readCounter is a Store that counts the Gets that returned.
type readCounter struct {
	Store
	reads atomic.Int64
}

func (r *readCounter) Get(ctx context.Context, id, owner string) (*Job, error) {
	defer r.reads.Add(1)
	return r.Store.Get(ctx, id, owner)
}

type subscribeSignal struct {
	Store
	once sync.Once
	done chan struct{}
}

func (s *subscribeSignal) Subscribe(ctx context.Context) (Subscription, error) {
	first := false
	s.once.Do(func() { first = true })
	if first {
		close(s.done)
		return nil, io.ErrUnexpectedEOF
	}
	return s.Store.Subscribe(ctx)
}
