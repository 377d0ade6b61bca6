package exporter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// soakDuration is how long TestSoak generates load: `make soak` (SOAK=2m)
// and `make test` (20s) set it. EXPORTER_SOAK=<duration> does the same
// (any other non-empty value means 20s).
var soakDuration = flag.Duration("soak", 0, "run TestSoak for this long (0: skip it unless EXPORTER_SOAK is set)")

func soakLength() time.Duration {
	if *soakDuration > 0 {
		return *soakDuration
	}
	if v := os.Getenv("EXPORTER_SOAK"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
		return 20 * time.Second
	}
	return 0
}

// Bounds of the soak, whatever its duration.
const (
	soakInstances = 4
	soakProducers = 6 // goroutines starting exports, each a few at a time
	soakMaxSize   = 300 << 10
	soakMaxJobs   = 200_000 // exports started, at most
	soakMaxBytes  = 3 << 30 // bytes exported, at most: Redis keeps them all until the final checks
	soakLeaseTTL  = 5 * time.Second
	soakCallLimit = 10 * time.Second // StartExport, CancelExport, OpenExport and a download
	soakWaitLimit = 60 * time.Second // one WaitExport
)

var soakChunkSizes = []int{1024, 4096, DefaultChunkSize}

// soakKind is how a soak source behaves.
type soakKind uint8

const (
	soakClean soakKind = iota // delivers its bytes, then io.EOF (sometimes alongside the last bytes)
	soakError                 // fails with errSoakInjected after its bytes
	soakPanic                 // panics after its bytes
	soakStall                 // returns (0, nil) forever after its bytes
	soakBlock                 // blocks after its bytes until it is closed; its producer cancels it
)

func (k soakKind) String() string {
	return [...]string{"clean", "error", "panic", "stall", "block"}[k]
}

var errSoakInjected = errors.New("soak: injected read error")

// soakSource delivers size bytes of a ChaCha8 stream (so that they can be
// regenerated from the seed to check the download) in reads of random
// sizes, some of them empty, some after a short sleep; then it ends as its
// kind says. Read is called by one goroutine at a time, Close from any.
type soakSource struct {
	kind     soakKind
	size     int64
	data     *rand.ChaCha8
	rng      *rand.Rand // read sizes and delays
	slow     time.Duration
	closeErr bool
	pos      int64

	closes atomic.Int32
	closed chan struct{}
}

func soakData(seed [32]byte, size int64) []byte {
	b := make([]byte, size)
	rand.NewChaCha8(seed).Read(b)
	return b
}

func (s *soakSource) Read(p []byte) (int, error) {
	if s.pos == s.size {
		switch s.kind {
		case soakError:
			return 0, errSoakInjected
		case soakPanic:
			panic(errSoakInjected.Error())
		case soakStall:
			return 0, nil
		case soakBlock:
			<-s.closed
			return 0, errors.New("soak: source closed")
		}
		return 0, io.EOF
	}
	if s.slow > 0 {
		time.Sleep(s.slow)
	}
	n := len(p)
	switch r := s.rng.IntN(100); {
	case r < 3: // rarely twice in a row, never near maxEmptyReads
		return 0, nil
	case r < 40:
		n = 1 + s.rng.IntN(len(p))
	}
	n = int(min(int64(n), s.size-s.pos))
	s.data.Read(p[:n])
	s.pos += int64(n)
	if s.pos == s.size && s.kind == soakClean && s.rng.IntN(2) == 0 {
		return n, io.EOF
	}
	return n, nil
}

func (s *soakSource) Close() error {
	if s.closes.Add(1) == 1 {
		close(s.closed)
	}
	if s.closeErr {
		return errors.New("soak: Close failed")
	}
	return nil
}

// soakInstance is one Exporter of the soak: a service instance on a client
// of its own. A restart replaces it with a new one on the same store.
type soakInstance struct {
	slot   int
	gen    int
	x      *Exporter
	cfg    Config
	store  *RedisStore
	down   atomic.Bool // its Shutdown was called (a restart)
	killed atomic.Bool // it lost its Redis connection before its Shutdown (a kill)
}

// soakJob is one export the soak started, with what it needs to check it.
type soakJob struct {
	id        string
	user      User
	inst      *soakInstance // the instance that accepted it
	kind      soakKind
	seed      [32]byte
	size      int64
	src       *soakSource // nil for a durable export
	durable   bool        // enqueued: any instance runs it, and it must complete
	cancelled atomic.Bool // a CancelExport returned it cancelled
	// maybeCancelled: a CancelExport went to an instance that was killed
	// during the call; it may have been applied.
	maybeCancelled atomic.Bool
	final          *Job // as WaitExport returned it; set by its producer
}

type soakRun struct {
	t      *testing.T
	e      *env
	stores []*RedisStore
	admin  User

	mu    sync.RWMutex
	slots []*soakInstance
	all   []*soakInstance // every instance ever started, for the final Shutdown

	jobsMu   sync.Mutex
	jobs     []*soakJob
	rejected []*soakSource // sources of starts refused with ErrClosed (a restart)

	started, bytes, injected, restarts, cancels, cancelled, refused atomic.Int64
	durable, kills, resumed                                         atomic.Int64
	violations                                                      atomic.Int64
	extraClients                                                    []redis.UniversalClient // of instances started by a kill
}

// soakDurableSource is the Source of the soak's durable exports: their
// ChaCha8 stream (seed and size in the args) from offset on, sometimes
// slowly, so that restarts and kills catch them running.
func soakDurableSource(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
	var seedHex string
	var size int64
	var slow bool
	if _, err := fmt.Sscanf(string(job.Args), "%s %d %t", &seedHex, &size, &slow); err != nil {
		return nil, fmt.Errorf("%w: args %q", ErrPermanent, job.Args)
	}
	var seed [32]byte
	if _, err := hex.Decode(seed[:], []byte(seedHex)); err != nil {
		return nil, fmt.Errorf("%w: seed %q", ErrPermanent, seedHex)
	}
	r := bytes.NewReader(soakData(seed, size)[offset:])
	if !slow {
		return r, nil
	}
	return &pacedReader{r: r, ctx: ctx}, nil
}

// violate records a broken invariant. It is safe from any goroutine.
func (s *soakRun) violate(format string, args ...any) {
	if s.violations.Add(1) <= 50 {
		s.t.Errorf("soak invariant violated: "+format, args...)
	}
}

func (s *soakRun) instance(slot int) *soakInstance {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.slots[slot]
}

// newInstance starts the Exporter of slot; the slot keeps its Config
// across restarts.
func (s *soakRun) newInstance(slot, gen int, cfg Config) (*soakInstance, error) {
	s.mu.RLock()
	store := s.stores[slot]
	s.mu.RUnlock()
	x, err := New(store, cfg)
	if err != nil {
		return nil, err
	}
	in := &soakInstance{slot: slot, gen: gen, x: x, cfg: cfg, store: store}
	s.mu.Lock()
	s.all = append(s.all, in)
	s.mu.Unlock()
	return in, nil
}

// TestSoak runs thousands of exports of random sizes on several Exporters
// sharing a real Redis, with random cancels from other instances, reader
// failures and restarts, for -soak (or EXPORTER_SOAK), and then checks
// the invariants: every job terminal with the status its story allows,
// every completed download equal to its input and checksum, every source
// closed once, no data left by a job that did not complete, a TTL on every
// key, and goroutines and heap back near where they started.
func TestSoak(t *testing.T) {
	length := soakLength()
	if length <= 0 {
		t.Skip("soak test: run with -soak <duration> (make soak) or EXPORTER_SOAK=<duration>")
	}
	e := newEnv(t, "redis")
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	startHeap, startGoroutines := ms.HeapAlloc, runtime.NumGoroutine()
	began := time.Now()

	s := &soakRun{t: t, e: e, admin: User{ID: "soak-admin", Permissions: []string{"exporter-admin"}}}
	t.Cleanup(func() {
		for _, c := range s.extraClients {
			c.Close()
		}
	})
	seed := uint64(time.Now().UnixNano())
	t.Logf("soak seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	var clients []redis.UniversalClient
	for slot := range soakInstances {
		c := e.dial() // closed below, before the goroutine count
		clients = append(clients, c)
		s.stores = append(s.stores, NewRedisStore(c).WithPrefix(e.prefix))
		cfg := Config{
			ChunkSize:       soakChunkSizes[rng.IntN(len(soakChunkSizes))],
			MaxRunning:      []int{2, 4, 8}[rng.IntN(3)],
			LeaseTTL:        soakLeaseTTL,
			Retention:       length + 10*time.Minute, // every job outlives the final checks
			AdminPermission: "exporter-admin",
			Sources:         map[string]Source{"soak": soakDurableSource},
			MaxAttempts:     10, // kills cost attempts: a durable export must outlive several
		}
		in, err := s.newInstance(slot, 0, cfg)
		require.NoError(t, err)
		s.slots = append(s.slots, in)
		t.Logf("instance %d: ChunkSize %d, MaxRunning %d", slot, cfg.ChunkSize, cfg.MaxRunning)
	}
	// Whatever happens, nothing outlives the test.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, in := range s.all {
			in.x.Shutdown(ctx)
		}
		for _, c := range clients {
			c.Close()
		}
	})

	deadline := time.Now().Add(length)
	var producers sync.WaitGroup
	for p := range soakProducers {
		producers.Add(1)
		go func() {
			defer producers.Done()
			s.produce(rand.New(rand.NewPCG(seed, uint64(p+1))), deadline)
		}()
	}
	stopRestarts := make(chan struct{})
	restarter := make(chan struct{})
	go func() {
		defer close(restarter)
		s.restartLoop(rand.New(rand.NewPCG(seed, 1000)), deadline, length, stopRestarts)
	}()
	go s.progress(began, length, stopRestarts)
	producers.Wait()
	close(stopRestarts)
	<-restarter
	loadTime := time.Since(began)

	// Every job ends, with the status its story allows, and keeps it.
	t.Logf("load done after %v; checking", loadTime.Round(time.Millisecond))
	if s.bytes.Load() >= soakMaxBytes || s.started.Load() >= soakMaxJobs {
		t.Logf("the load stopped early, at its bound of %d exports or %d MiB", soakMaxJobs, soakMaxBytes>>20)
	}
	s.waitAll()
	var completed, cancelled, failed, closedByRestart atomic.Int64
	var verified []*soakJob
	for _, j := range s.jobs {
		job := j.final
		if job == nil {
			continue // a violation already
		}
		if j.durable && job.Attempt > 1 {
			s.resumed.Add(1)
		}
		switch job.Status {
		case StatusCompleted:
			completed.Add(1)
			if j.kind != soakClean {
				s.violate("job %s completed despite its %s source", j.id, j.kind)
			}
			if j.cancelled.Load() {
				s.violate("job %s completed after a successful cancel", j.id)
			}
			verified = append(verified, j)
		case StatusCancelled:
			cancelled.Add(1)
			if !j.cancelled.Load() && !j.maybeCancelled.Load() {
				s.violate("job %s cancelled but no cancel succeeded", j.id)
			}
		case StatusFailed:
			failed.Add(1)
			switch {
			case j.cancelled.Load():
				s.violate("job %s failed (%s) after a successful cancel", j.id, job.Error)
			case j.durable:
				s.violate("durable job %s failed in attempt %d: %s", j.id, job.Attempt, job.Error)
			case errors.Is(job.Err(), ErrClosed) && j.inst.down.Load():
				closedByRestart.Add(1)
			case j.inst.killed.Load() && (job.ErrorCode == CodeWorkerLost || job.ErrorCode == CodeStore):
				closedByRestart.Add(1) // its instance was killed
			case j.kind == soakError && strings.Contains(job.Error, errSoakInjected.Error()),
				j.kind == soakPanic && strings.Contains(job.Error, "panicked"),
				j.kind == soakStall && strings.Contains(job.Error, io.ErrNoProgress.Error()):
			default:
				s.violate("job %s (%s source, instance %d gen %d) failed: %s", j.id, j.kind, j.inst.slot, j.inst.gen, job.Error)
			}
		default:
			s.violate("job %s is %s", j.id, job.Status)
		}
	}

	// Every completed download equals its input and its checksum.
	t.Logf("%v: every job terminal; verifying %d downloads", time.Since(began).Round(time.Millisecond), len(verified))
	s.verifyDownloads(verified)
	t.Logf("%v: downloads verified", time.Since(began).Round(time.Millisecond))

	// A job that did not complete keeps no data.
	s.requireNoData()

	// Shutdown of every instance returns at once: nothing is left to run.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	for _, in := range s.slots {
		if err := in.x.Shutdown(ctx); err != nil {
			s.violate("final Shutdown of instance %d: %v", in.slot, err)
		}
	}
	cancel()

	// Every source, of a started export or of a refused start, was closed
	// exactly once.
	sources := len(s.rejected)
	for _, j := range s.jobs {
		if j.src == nil {
			continue // durable: its attempts' readers are the Source's
		}
		s.requireClosedOnce(j.src, j.id)
		sources++
	}
	for _, src := range s.rejected {
		s.requireClosedOnce(src, "(refused start)")
	}

	// No key without a TTL.
	keys, noTTL := s.countNoTTL()

	// The figures, printed however the rest goes.
	jobs := len(s.jobs)
	// Set by require.Eventually's condition goroutine.
	var goroutines atomic.Int64
	var heap atomic.Uint64
	goroutines.Store(-1)
	const heapMargin = 16 << 20 // 20 times the usual growth; a leak of 1 KB per export passes it
	defer func() {
		violations := s.violations.Load() + int64(noTTL)
		if goroutines.Load() > int64(startGoroutines)+5 {
			violations++
		}
		if heap.Load() > startHeap+heapMargin {
			violations++
		}
		summary := fmt.Sprintf("soak: %v of load (%v in all), %d exporters: exports run %d, bytes %d (%.1f MiB), "+
			"completed %d, cancelled %d, failed %d (%d by restarts), failures injected %d, "+
			"durable %d (%d resumed), cancels %d (%d too late), restarts %d (%d kills), starts refused %d, sources %d, keys %d, "+
			"goroutines %d -> %d, heap %.1f -> %.1f MiB, invariant violations %d",
			loadTime.Round(time.Millisecond), time.Since(began).Round(time.Millisecond), soakInstances,
			jobs, s.bytes.Load(), float64(s.bytes.Load())/(1<<20),
			completed.Load(), cancelled.Load(), failed.Load(), closedByRestart.Load(), s.injected.Load(),
			s.durable.Load(), s.resumed.Load(), s.cancels.Load(), s.cancels.Load()-s.cancelled.Load(), s.restarts.Load(), s.kills.Load(),
			s.refused.Load(), sources, keys,
			startGoroutines, goroutines.Load(), float64(startHeap)/(1<<20), float64(heap.Load())/(1<<20), violations)
		t.Log(summary)
		fmt.Println(summary)
	}()
	require.Zero(t, noTTL, "keys without a TTL")

	// Goroutines and heap back near their starting level, once every
	// Exporter is shut down and its client closed.
	for _, c := range clients {
		c.Close()
	}
	require.Eventually(t, func() bool {
		n := runtime.NumGoroutine() - 1 // this condition runs on a goroutine of its own
		goroutines.Store(int64(n))
		return n <= startGoroutines+5
	}, 10*time.Second, 20*time.Millisecond, "goroutines not back near their starting level (see the summary)")
	s.jobs, s.rejected, verified = nil, nil, nil // what the soak kept, for the heap figure
	require.Eventually(t, func() bool {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		heap.Store(ms.HeapAlloc)
		return ms.HeapAlloc <= startHeap+heapMargin
	}, 10*time.Second, 20*time.Millisecond, "heap not back near its starting level (see the summary)")
	require.Zero(t, s.violations.Load(), "invariant violations")
	// Last: it registers a cleanup per key, which the heap figure would count.
	e.requireTTLs(t)
}

// progress logs the figures so far a few times during the load, until
// stop.
func (s *soakRun) progress(began time.Time, length time.Duration, stop chan struct{}) {
	t := time.NewTicker(max(length/6, 5*time.Second))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.t.Logf("%v: %d exports started, %.1f MiB, %d restarts", time.Since(began).Round(time.Second),
				s.started.Load(), float64(s.bytes.Load())/(1<<20), s.restarts.Load())
		}
	}
}

// produce starts exports a few at a time on random instances, cancels
// some from another instance, and waits for each, until deadline or a
// bound.
func (s *soakRun) produce(rng *rand.Rand, deadline time.Time) {
	for time.Now().Before(deadline) && s.started.Load() < soakMaxJobs && s.bytes.Load() < soakMaxBytes {
		var mine []*soakJob
		for range 1 + rng.IntN(4) {
			if j := s.start(rng); j != nil {
				mine = append(mine, j)
			}
		}
		for _, j := range mine {
			switch {
			case j.kind == soakBlock: // it never ends on its own
				time.Sleep(time.Duration(rng.IntN(20_000)) * time.Microsecond)
				s.cancel(rng, j)
			case rng.IntN(10) == 0: // racing the copy, or its end
				time.Sleep(time.Duration(rng.IntN(5_000)) * time.Microsecond)
				s.cancel(rng, j)
			}
		}
		for _, j := range mine {
			s.wait(rng, j)
		}
	}
}

// start starts one export with a random size, source and instance.
func (s *soakRun) start(rng *rand.Rand) *soakJob {
	in := s.instance(rng.IntN(soakInstances))
	j := &soakJob{inst: in, user: []User{alice, bob}[rng.IntN(2)]}
	// Sizes log-uniform up to soakMaxSize, with empty exports and chunk
	// boundaries of the instance often.
	switch r := rng.IntN(100); {
	case r < 5:
		j.size = 0
	case r < 15:
		k := int64(1 + rng.IntN(soakMaxSize/in.cfg.ChunkSize))
		j.size = max(k*int64(in.cfg.ChunkSize)+int64(rng.IntN(3))-1, 0)
	default:
		j.size = int64(math.Exp(rng.Float64()*math.Log(soakMaxSize))) - 1
	}
	switch r := rng.IntN(100); {
	case r < 80:
		j.kind = soakClean
	case r < 87:
		j.kind = soakError
	case r < 92:
		j.kind = soakPanic
	case r < 93:
		j.kind = soakStall
	default:
		j.kind = soakBlock
		j.size = min(j.size, 64<<10)
	}
	for i := range j.seed {
		j.seed[i] = byte(rng.Uint32())
	}
	if rng.IntN(100) < 15 {
		return s.enqueue(rng, in, j)
	}
	j.src = &soakSource{kind: j.kind, size: j.size, data: rand.NewChaCha8(j.seed),
		rng: rand.New(rand.NewPCG(rng.Uint64(), 0)), closeErr: rng.IntN(20) == 0, closed: make(chan struct{})}
	if rng.IntN(100) < 10 { // long enough for cancels and restarts to catch it running
		j.src.slow = time.Duration(500+rng.IntN(3500)) * time.Microsecond
	}
	var opts []StartOption
	if rng.IntN(2) == 0 {
		opts = append(opts, WithTotal(j.size), WithMetadata(map[string]string{"kind": j.kind.String()}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), soakCallLimit)
	defer cancel()
	job, err := in.x.StartExport(ctx, j.user, j.src, opts...)
	switch {
	case err != nil && (errors.Is(err, ErrClosed) && in.down.Load() || in.killed.Load()): // a restart is under way
		s.refused.Add(1)
		s.jobsMu.Lock()
		s.rejected = append(s.rejected, j.src)
		s.jobsMu.Unlock()
		return nil
	case err != nil:
		s.violate("StartExport on instance %d: %v", in.slot, err)
		return nil
	}
	j.id = job.ID
	if j.kind != soakClean {
		s.injected.Add(1)
	}
	s.started.Add(1)
	s.bytes.Add(j.size)
	s.jobsMu.Lock()
	s.jobs = append(s.jobs, j)
	s.jobsMu.Unlock()
	return j
}

// enqueue enqueues j as a durable export of clean bytes on in.
func (s *soakRun) enqueue(rng *rand.Rand, in *soakInstance, j *soakJob) *soakJob {
	j.kind, j.durable = soakClean, true
	args := fmt.Sprintf("%s %d %t", hex.EncodeToString(j.seed[:]), j.size, rng.IntN(3) == 0)
	ctx, cancel := context.WithTimeout(context.Background(), soakCallLimit)
	defer cancel()
	job, err := in.x.Enqueue(ctx, j.user, "soak", []byte(args), WithTotal(j.size))
	switch {
	case err != nil && (errors.Is(err, ErrClosed) && in.down.Load() || in.killed.Load()): // a restart is under way
		s.refused.Add(1)
		return nil
	case err != nil:
		s.violate("Enqueue on instance %d: %v", in.slot, err)
		return nil
	}
	j.id = job.ID
	s.started.Add(1)
	s.durable.Add(1)
	s.bytes.Add(j.size)
	s.jobsMu.Lock()
	s.jobs = append(s.jobs, j)
	s.jobsMu.Unlock()
	return j
}

// other returns a random instance other than the one that started j.
func (s *soakRun) other(rng *rand.Rand, j *soakJob) *soakInstance {
	slot := (j.inst.slot + 1 + rng.IntN(soakInstances-1)) % soakInstances
	return s.instance(slot)
}

// cancel cancels j from another instance, as its owner or as an admin.
func (s *soakRun) cancel(rng *rand.Rand, j *soakJob) {
	in, user := s.other(rng, j), j.user
	if rng.IntN(4) == 0 {
		user = s.admin
	}
	ctx, cancel := context.WithTimeout(context.Background(), soakCallLimit)
	defer cancel()
	s.cancels.Add(1)
	job, err := in.x.CancelExport(ctx, user, j.id)
	switch {
	case err != nil && in.killed.Load():
		j.maybeCancelled.Store(true)
	case err == nil:
		if job.Status != StatusCancelled {
			s.violate("cancel of %s returned %s without an error", j.id, job.Status)
		}
		j.cancelled.Store(true)
		s.cancelled.Add(1)
	case errors.Is(err, ErrFinished):
		if job == nil || (job.Status != StatusCompleted && job.Status != StatusFailed) {
			s.violate("cancel of %s: %v with job %+v", j.id, err, job)
		}
	default:
		s.violate("cancel of %s from instance %d: %v", j.id, in.slot, err)
	}
}

// wait waits for j on a random instance and records its end.
func (s *soakRun) wait(rng *rand.Rand, j *soakJob) {
	in := s.instance(rng.IntN(soakInstances))
	ctx, cancel := context.WithTimeout(context.Background(), soakWaitLimit)
	defer cancel()
	job, err := in.x.WaitExport(ctx, j.user, j.id)
	for range 3 {
		if err == nil || !in.killed.Load() {
			break
		}
		// Its instance was killed while it waited: wait on another.
		in = s.instance(rng.IntN(soakInstances))
		job, err = in.x.WaitExport(ctx, j.user, j.id)
	}
	if err != nil {
		s.violate("WaitExport of %s (%s, %d bytes) on instance %d: %v", j.id, j.kind, j.size, in.slot, err)
		return
	}
	if !job.Status.Terminal() {
		s.violate("WaitExport of %s returned %s", j.id, job.Status)
	}
	j.final = job
}

// restartLoop shuts one random instance down with a short deadline, so
// that its running and pending exports are killed, and replaces it with a
// new Exporter on the same store, every few seconds until stop.
func (s *soakRun) restartLoop(rng *rand.Rand, deadline time.Time, length time.Duration, stop chan struct{}) {
	every := min(max(length/12, 500*time.Millisecond), 5*time.Second)
	for {
		pause := every/2 + time.Duration(rng.Int64N(int64(every)))
		if time.Now().Add(pause).After(deadline) {
			return
		}
		select {
		case <-stop:
			return
		case <-time.After(pause):
		}
		slot := rng.IntN(soakInstances)
		s.mu.RLock()
		old := s.slots[slot]
		s.mu.RUnlock()
		kill := rng.IntN(3) == 0
		if kill {
			// A kill: the old instance loses Redis for good (its client is
			// closed) before its Shutdown, so its leases lapse. The new one
			// gets a client of its own.
			c := s.e.dial()
			s.mu.Lock()
			s.extraClients = append(s.extraClients, c)
			s.stores[slot] = NewRedisStore(c).WithPrefix(s.e.prefix)
			s.mu.Unlock()
		}
		next, err := s.newInstance(slot, old.gen+1, old.cfg)
		if err != nil {
			s.violate("restart of instance %d: %v", slot, err)
			return
		}
		old.down.Store(true) // before Shutdown: a start it refuses sees it
		s.mu.Lock()
		s.slots[slot] = next
		s.mu.Unlock()
		if kill {
			// Every instance on that client loses Redis: the old one, and
			// those it replaced, which WaitExport may still use after their
			// Shutdown.
			s.mu.RLock()
			for _, in := range s.all {
				if in.store == old.store {
					in.killed.Store(true)
				}
			}
			s.mu.RUnlock()
			old.store.client.Close()
			s.kills.Add(1)
		}
		grace := time.Duration(0) // half the time, kill whatever runs
		if rng.IntN(2) == 0 {
			grace = time.Duration(rng.IntN(100)) * time.Millisecond
		}
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		done := make(chan struct{})
		go func() {
			defer close(done)
			old.x.Shutdown(ctx)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			s.violate("Shutdown of instance %d gen %d did not return within 30s", slot, old.gen)
			<-done // the test's own -timeout is the last bound
		}
		cancel()
		s.restarts.Add(1)
	}
}

// waitAll waits for every job again, a few at a time, from instance 0:
// each must be terminal, with the status its producer saw.
func (s *soakRun) waitAll() {
	work := make(chan *soakJob)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				ctx, cancel := context.WithTimeout(context.Background(), soakWaitLimit)
				job, err := s.instance(0).x.WaitExport(ctx, j.user, j.id)
				cancel()
				switch {
				case err != nil:
					s.violate("job %s (%s) not terminal: %v", j.id, j.kind, err)
					j.final = nil
					continue
				case j.final != nil && j.final.Status != job.Status:
					s.violate("job %s was %s, now %s", j.id, j.final.Status, job.Status)
				}
				j.final = job
			}
		}()
	}
	for _, j := range s.jobs {
		work <- j
	}
	close(work)
	wg.Wait()
}

// verifyDownloads reads every completed job back, half with Read and half
// with WriteTo, from an instance other than its own, as its owner or an
// admin, and compares it with its regenerated input and checksum.
func (s *soakRun) verifyDownloads(jobs []*soakJob) {
	work := make(chan *soakJob)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for j := range work {
				s.verifyDownload(rng, j)
			}
		}()
	}
	for _, j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()
}

func (s *soakRun) verifyDownload(rng *rand.Rand, j *soakJob) {
	data := soakData(j.seed, j.size)
	sum := sha256.Sum256(data)
	if want := "sha256:" + hex.EncodeToString(sum[:]); j.final.Checksum != want || j.final.Bytes != j.size {
		s.violate("job %s completed with %d bytes %s, input %d bytes %s", j.id, j.final.Bytes, j.final.Checksum, j.size, want)
		return
	}
	if j.final.ChunkSize != j.inst.cfg.ChunkSize {
		s.violate("job %s recorded ChunkSize %d, its instance has %d", j.id, j.final.ChunkSize, j.inst.cfg.ChunkSize)
	}
	user := j.user
	if rng.IntN(4) == 0 {
		user = s.admin
	}
	ctx, cancel := context.WithTimeout(context.Background(), soakCallLimit)
	defer cancel()
	d, err := s.other(rng, j).x.OpenExport(ctx, user, j.id)
	if err != nil {
		s.violate("open %s: %v", j.id, err)
		return
	}
	defer d.Close()
	var got bytes.Buffer
	if rng.IntN(2) == 0 {
		_, err = io.Copy(&got, d) // WriteTo
	} else {
		_, err = io.Copy(&got, struct{ io.Reader }{d}) // Read
	}
	if err != nil {
		s.violate("download %s: %v", j.id, err)
		return
	}
	if !bytes.Equal(got.Bytes(), data) {
		s.violate("download %s: %d bytes differ from its %d input bytes", j.id, got.Len(), len(data))
	}
}

// requireNoData checks that no cancelled or failed job kept its data list.
func (s *soakRun) requireNoData() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var ended []*soakJob
	for _, j := range s.jobs {
		if j.final != nil && j.final.Status != StatusCompleted {
			ended = append(ended, j)
		}
	}
	for len(ended) > 0 {
		batch := ended[:min(len(ended), 500)]
		ended = ended[len(batch):]
		pipe := s.e.client.Pipeline()
		cmds := make([]*redis.IntCmd, len(batch))
		for i, j := range batch {
			cmds[i] = pipe.Exists(ctx, s.e.store.keys(j.id)[1])
		}
		if _, err := pipe.Exec(ctx); err != nil {
			s.violate("EXISTS of data lists: %v", err)
			return
		}
		for i, c := range cmds {
			if c.Val() != 0 {
				s.violate("%s job %s kept its data", batch[i].final.Status, batch[i].id)
			}
		}
	}
}

// requireClosedOnce waits (up to 10 s) for src's Close and checks there
// was exactly one.
func (s *soakRun) requireClosedOnce(src *soakSource, id string) {
	select {
	case <-src.closed:
	case <-time.After(10 * time.Second):
		s.violate("source of %s (%s) was never closed", id, src.kind)
		return
	}
	if n := src.closes.Load(); n != 1 {
		s.violate("source of %s (%s) closed %d times", id, src.kind, n)
	}
}

// countNoTTL counts the keys under the prefix and those without a TTL.
func (s *soakRun) countNoTTL() (keys, noTTL int) {
	all := s.e.keys(s.t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for rest := all; len(rest) > 0; {
		batch := rest[:min(len(rest), 1000)]
		rest = rest[len(batch):]
		pipe := s.e.client.Pipeline()
		cmds := make([]*redis.DurationCmd, len(batch))
		for i, k := range batch {
			cmds[i] = pipe.PTTL(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			s.violate("PTTL of the keys: %v", err)
			return len(all), 0
		}
		for i, c := range cmds {
			if c.Val() == -1 {
				noTTL++
				if noTTL <= 10 {
					s.t.Errorf("key %s has no TTL", batch[i])
				}
			}
		}
	}
	return len(all), noTTL
}
