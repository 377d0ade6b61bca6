package exporter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"
)

// Config configures an Exporter. The zero Config is valid: every field
// documents its default. Negative values are invalid.
type Config struct {
	// Permission is needed to start an export. "" means "exporter".
	Permission string
	// AdminPermission lets its holders see, cancel and open any user's
	// exports. "" means nobody has that power.
	AdminPermission string
	// Permissions checks both permissions. nil checks User.Permissions.
	Permissions PermissionChecker
	// ChunkSize is the number of bytes per stored chunk, 1 KiB to 16 MiB.
	// 0 means 64 KiB - 16 bytes (65520). Redis stores a chunk with a small
	// header, and its allocator rounds a chunk of exactly a power of two up
	// by 25% (measured: 1.25 bytes of Redis memory per byte at 65536, 1.001
	// at 65520), so choose a size a little under a power of two. Each job
	// records its own, so instances with different values read each
	// other's exports.
	ChunkSize int
	// MaxBytes is the largest export; one that passes it fails with
	// ErrTooLarge. 0 means 256 MiB.
	MaxBytes int64
	// MaxRunning is how many exports this Exporter copies at once. 0 means 16.
	MaxRunning int
	// MaxPending is how many accepted exports may wait for a run slot on
	// this Exporter; StartExport returns ErrBusy beyond it. 0 means 1024.
	MaxPending int
	// MaxPerUser caps one user's pending and running exports on this
	// Exporter (ErrBusy beyond it). 0 means no cap.
	MaxPerUser int
	// Retention is how long a job and its data live after their last
	// update. 0 means 24 hours.
	Retention time.Duration
	// LeaseTTL is how long a pending or running job survives its instance:
	// the instance renews the lease every LeaseTTL/3, and a job whose lease
	// lapses reads as failed with ErrWorkerLost. 0 means 15 seconds; at
	// least 100 ms.
	LeaseTTL time.Duration
	// MinReplicas is how many replicas must hold an export's bytes and its
	// seal (its checksum and chunk count) before it is recorded completed
	// (Redis WAIT, on the master that took them). A server that has the
	// seal completes the export itself if the completion was lost, so a
	// failover cannot take back an export reported completed. If the
	// replicas do not acknowledge within ReplicaTimeout (tried three times,
	// also across a failover), the export fails with ErrNotReplicated and
	// never read completed. 0 (the default) does not wait: replication is
	// asynchronous, so a failover right after a completion can lose it (the
	// export then fails with ErrWorkerLost, or is gone if its creation was
	// lost too). Either way an export never reads completed without its
	// bytes: replicas apply writes in order. See docs/failover.md.
	MinReplicas int
	// ReplicaTimeout bounds each WAIT for MinReplicas. 0 means 1 second.
	// Keep it below the client's ReadTimeout.
	ReplicaTimeout time.Duration
	// Logger receives the Exporter's log records. nil discards them.
	// Records about one export carry its id and owner as the attributes
	// "job" and "owner".
	Logger *slog.Logger
	// MeterProvider receives the Exporter's metrics (see MeterName and
	// the package documentation for the instruments). nil reports none.
	MeterProvider metric.MeterProvider
}

// Defaults and bounds of Config.
const (
	DefaultPermission = "exporter"
	DefaultChunkSize  = 64<<10 - 16
	DefaultMaxBytes   = 256 << 20
	DefaultMaxRunning = 16
	DefaultMaxPending = 1024
	DefaultRetention  = 24 * time.Hour
	DefaultLeaseTTL   = 15 * time.Second

	minChunkSize = 1 << 10
	maxChunkSize = 16 << 20
	minLeaseTTL  = 100 * time.Millisecond
)

func (c Config) withDefaults() Config {
	if c.Permission == "" {
		c.Permission = DefaultPermission
	}
	if c.Permissions == nil {
		c.Permissions = userPermissions{}
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = DefaultChunkSize
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxRunning == 0 {
		c.MaxRunning = DefaultMaxRunning
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.ReplicaTimeout == 0 {
		c.ReplicaTimeout = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// validate checks a Config after withDefaults and names the bad field.
func (c Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: Config."+format, append([]any{ErrInvalid}, args...)...)
	}
	switch {
	case c.ChunkSize < minChunkSize || c.ChunkSize > maxChunkSize:
		return bad("ChunkSize must be between 1 KiB and 16 MiB, not %d", c.ChunkSize)
	case c.MaxBytes < 0:
		return bad("MaxBytes must not be negative")
	case c.MaxRunning < 0:
		return bad("MaxRunning must not be negative")
	case c.MaxPending < 0:
		return bad("MaxPending must not be negative")
	case c.MaxPerUser < 0:
		return bad("MaxPerUser must not be negative")
	case c.MinReplicas < 0:
		return bad("MinReplicas must not be negative")
	case c.ReplicaTimeout < 0:
		return bad("ReplicaTimeout must not be negative")
	case c.Retention < time.Millisecond:
		return bad("Retention must be at least 1ms, not %v", c.Retention)
	case c.LeaseTTL < minLeaseTTL:
		return bad("LeaseTTL must be at least %v, not %v", minLeaseTTL, c.LeaseTTL)
	case c.Retention < c.LeaseTTL:
		return bad("Retention (%v) must not be shorter than LeaseTTL (%v)", c.Retention, c.LeaseTTL)
	}
	return nil
}

// Exporter runs export jobs and answers for any job in its Store, whichever
// instance runs it. Create one with New and stop it with Shutdown. All
// methods are safe for concurrent use.
type Exporter struct {
	store Store
	cfg   Config
	log   *slog.Logger
	ins   *instruments

	// base is the context every export and background goroutine runs
	// under; stop cancels it with ErrClosed when Shutdown gives up waiting.
	base context.Context
	stop context.CancelCauseFunc
	// leases is the lease keeper's context. Shutdown cancels it last, once
	// the ends of the runs it gave up on are recorded: until then their
	// leases must not lapse (they would read "worker lost").
	leases     context.Context
	stopLeases context.CancelFunc
	wg         sync.WaitGroup
	bufs       bufferPool // chunk buffers of cfg.ChunkSize

	mu         sync.Mutex
	closed     bool          // Shutdown was called: no new starts
	stopped    bool          // Shutdown is waiting for the goroutines: none may start
	background bool          // the lease keeper and event listener are started
	listening  chan struct{} // closed once the listener is subscribed (nil before)
	waitersMu  sync.Mutex
	waiters    map[string]map[chan Event]struct{} // WaitExport calls by job id
	reserved   int                                // starts between the capacity check and the queue
	running    int                                // worker goroutines
	queue      []*run                             // pending runs, oldest first
	runs       map[string]*run                    // pending and running, by id
	perUser    map[string]int                     // pending and running, by owner
	idle       chan struct{}                      // closed once closed and nothing is left to run
}

// New returns an Exporter on store. It validates cfg (an error wrapping
// ErrInvalid names the field) and does no I/O: background goroutines start
// with the first export.
func New(store Store, cfg Config) (*Exporter, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: New needs a Store", ErrInvalid)
	}
	if v, ok := store.(interface{ validate() error }); ok {
		if err := v.validate(); err != nil {
			return nil, err
		}
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	base, stop := context.WithCancelCause(context.Background())
	leases, stopLeases := context.WithCancel(context.WithoutCancel(base))
	e := &Exporter{
		store:      store,
		cfg:        cfg,
		log:        cfg.Logger,
		base:       base,
		stop:       stop,
		leases:     leases,
		stopLeases: stopLeases,
		runs:       make(map[string]*run),
		waiters:    make(map[string]map[chan Event]struct{}),
		perUser:    make(map[string]int),
		idle:       make(chan struct{}),
		bufs:       bufferPool{size: cfg.ChunkSize},
	}
	ins, err := newInstruments(cfg.MeterProvider, e)
	if err != nil {
		stop(nil)
		return nil, fmt.Errorf("exporter: metrics: %w", err)
	}
	e.ins = ins
	return e, nil
}

// run is one export held by this Exporter, pending or running.
type run struct {
	job   *Job         // as created; ChunkSize and ID are what the copy needs
	log   *slog.Logger // the Exporter's, with the job's id and owner
	start time.Time    // when StartExport was called
	final Status       // how it ended, once known (under e.mu); "" means failed or cancelled, by ctx's cause
	lease Lease
	// renewed is when the lease was last renewed (by the lease keeper,
	// which alone uses it), or created.
	renewed time.Time
	r       io.Reader
	ctx     context.Context // cancelled with the reason the run must stop
	cancel  context.CancelCauseFunc

	closeOnce sync.Once
}

// closeReader closes the source, if it is an io.Closer, exactly once. A
// panicking Close is contained.
func (rn *run) closeReader() {
	rn.closeOnce.Do(func() {
		closeSource(rn.r, rn.log)
	})
}

func closeSource(r io.Reader, log *slog.Logger) {
	c, ok := r.(io.Closer)
	if !ok {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			log.Error("export source Close panicked", "panic", p)
		}
	}()
	if err := c.Close(); err != nil {
		log.Debug("export source Close failed", "err", err)
	}
}

// StartExport checks that user may export, records a pending job and
// returns it at once; the bytes of r are copied into the store in the
// background, under the Exporter's context rather than ctx (only ctx's
// values are kept), so a finished HTTP request does not stop its export.
//
// StartExport takes ownership of r: if it is an io.Closer it is closed
// exactly once, when the export ends however it ends, or before StartExport
// returns an error.
//
// Errors wrap ErrUnauthenticated, ErrForbidden (also when the
// PermissionChecker fails), ErrInvalid (nil r, bad options), ErrTooLarge
// (WithTotal above MaxBytes), ErrBusy, ErrClosed, or the store's error.
// Nothing is written when it returns one of the sentinels, with one
// exception: a start that Shutdown gave up on while the job was being
// recorded returns ErrClosed and leaves that job failed. When it returns
// the store's error or ctx's, the job may have been recorded all the same
// (a reply that came too late): the Exporter then removes it in the
// background, so no job that a caller was told failed to start is left
// behind.
func (e *Exporter) StartExport(ctx context.Context, user User, r io.Reader, opts ...StartOption) (*Job, error) {
	job, err := e.startExport(ctx, user, r, opts)
	if err != nil {
		if r != nil {
			closeSource(r, e.log.With("owner", user.ID))
		}
		return nil, fmt.Errorf("exporter: start: %w", err)
	}
	return job, nil
}

func (e *Exporter) startExport(ctx context.Context, user User, r io.Reader, opts []StartOption) (*Job, error) {
	if !user.authenticated() {
		return nil, ErrUnauthenticated
	}
	if r == nil {
		return nil, fmt.Errorf("%w: nil reader", ErrInvalid)
	}
	var o startOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if err := o.validate(e.cfg.MaxBytes); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := e.require(ctx, user, e.cfg.Permission); err != nil {
		return nil, err
	}
	if err := e.reserve(user.ID); err != nil {
		return nil, err
	}
	// The first start begins listening for cancels, in parallel with its
	// create round trip, and waits (briefly) until the subscription is in
	// place, so that a cancel right after it is not missed.
	listening, first := e.startListening()
	id := uuid.NewString()
	rn := &run{
		job: &Job{ID: id, Owner: user.ID, Status: StatusPending, Total: o.total,
			Metadata: o.metadata, ChunkSize: e.cfg.ChunkSize},
		log:     e.log.With("job", id, "owner", user.ID),
		start:   start,
		renewed: start,
		lease:   Lease{Token: newToken(), TTL: e.cfg.LeaseTTL},
		r:       r,
	}
	// The copy outlives the caller's request but keeps its values
	// (trace ids, loggers), as the issue of the API asks.
	rn.ctx, rn.cancel = context.WithCancelCause(mergeValues(e.base, ctx))
	job, err := e.store.Create(ctx, rn.job, rn.lease, e.cfg.Retention)
	if err != nil {
		rn.cancel(err)
		e.unreserve(user.ID)
		if !errors.Is(err, ErrInvalid) {
			e.abandon(rn) // the creation may yet be applied: its caller is told it failed
		}
		return nil, err
	}
	rn.job = job
	if err := e.enqueue(rn); err != nil {
		return nil, err
	}
	if first {
		t := time.NewTimer(e.pollInterval())
		select {
		case <-listening:
		case <-t.C: // the store may be down; lease renewals cover cancels
		case <-ctx.Done():
		}
		t.Stop()
	}
	rn.log.InfoContext(ctx, "export started", "total", o.total)
	return job.clone(), nil
}

// abandon undoes, in the background, the creation of rn's job, which
// StartExport reports failed although it may have been applied (its reply
// was late or lost, say after ctx's deadline): a job nobody was told
// about must not be left to lapse and read "worker lost". It tries for up
// to LeaseTTL, the time the job would take to lapse, and gives up at
// Shutdown.
func (e *Exporter) abandon(rn *run) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		ctx, cancel := context.WithTimeout(e.base, e.cfg.LeaseTTL)
		defer cancel()
		backoff := 20 * time.Millisecond
		for {
			err := e.store.Abandon(ctx, rn.job.ID, rn.lease)
			if err == nil {
				rn.log.Debug("abandoned export creation undone")
				return
			}
			if !transient(err) || !sleepCtx(ctx, backoff) {
				rn.log.Warn("undoing an abandoned export creation failed; if it was recorded, it will read failed (worker lost)", "err", err)
				return
			}
			backoff = min(2*backoff, e.cfg.LeaseTTL/8)
		}
	}()
}

// sleepCtx waits d, or until ctx is done; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// require checks that user holds permission. A checker error denies.
func (e *Exporter) require(ctx context.Context, user User, permission string) error {
	ok, err := e.cfg.Permissions.HasPermission(ctx, user, permission)
	if err != nil {
		return fmt.Errorf("%w: permission check: %w", ErrForbidden, err)
	}
	if !ok {
		return fmt.Errorf("%w: user %q lacks permission %q", ErrForbidden, user.ID, permission)
	}
	return nil
}

// reserve claims capacity for one start of owner.
func (e *Exporter) reserve(owner string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if len(e.runs)+e.reserved >= e.cfg.MaxRunning+e.cfg.MaxPending {
		return fmt.Errorf("%w: %d exports pending", ErrBusy, len(e.queue))
	}
	if e.cfg.MaxPerUser > 0 && e.perUser[owner] >= e.cfg.MaxPerUser {
		return fmt.Errorf("%w: user %q has %d exports under way", ErrBusy, owner, e.perUser[owner])
	}
	e.reserved++
	e.perUser[owner]++
	return nil
}

func (e *Exporter) unreserve(owner string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reserved--
	e.release(owner)
}

// release drops one of owner's exports from the count. e.mu is held.
func (e *Exporter) release(owner string) {
	if e.perUser[owner]--; e.perUser[owner] <= 0 {
		delete(e.perUser, owner)
	}
	e.checkIdle()
}

// checkIdle closes e.idle once Shutdown began and nothing is left. e.mu
// is held.
func (e *Exporter) checkIdle() {
	if e.closed && len(e.runs) == 0 && e.reserved == 0 {
		select {
		case <-e.idle:
		default:
			close(e.idle)
		}
	}
}

// enqueue turns a reservation into a pending run, and starts a worker if a
// run slot is free. If Shutdown stopped waiting while the job was being
// created, the job is failed at once and enqueue returns ErrClosed.
func (e *Exporter) enqueue(rn *run) error {
	e.mu.Lock()
	e.reserved--
	if e.stopped {
		e.release(rn.job.Owner)
		e.mu.Unlock()
		rn.cancel(ErrClosed)
		e.end(rn, ErrClosed)
		return ErrClosed
	}
	defer e.mu.Unlock()
	e.runs[rn.job.ID] = rn
	e.ins.started.Add(rn.ctx, 1) // before its end can be counted
	e.startBackground()
	if e.running < e.cfg.MaxRunning {
		e.running++
		e.wg.Add(1)
		go e.worker(rn)
		return nil
	}
	e.queue = append(e.queue, rn)
	return nil
}

// worker executes rn, then the next pending run, until none is left.
func (e *Exporter) worker(rn *run) {
	defer e.wg.Done()
	for rn != nil {
		e.execute(rn)
		rn = e.next(rn)
	}
}

// next forgets done and returns the oldest pending run, or nil, in which
// case the worker ends.
func (e *Exporter) next(done *run) *run {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.forget(done)
	if len(e.queue) == 0 {
		e.running--
		return nil
	}
	rn := e.queue[0]
	e.queue[0] = nil
	e.queue = e.queue[1:]
	return rn
}

// forget drops rn from the held runs and counts its end. e.mu is held.
func (e *Exporter) forget(rn *run) {
	if e.runs[rn.job.ID] != rn {
		return
	}
	delete(e.runs, rn.job.ID)
	e.release(rn.job.Owner)
	final := rn.final
	if final == "" {
		final = StatusFailed
		if errors.Is(context.Cause(rn.ctx), ErrCancelled) {
			final = StatusCancelled
		}
	}
	e.ins.recordEnd(rn.ctx, final, rn.start)
}

// abort stops the run of id, if this Exporter holds it, for cause. A
// pending run is removed from the queue at once and its source closed; a
// running one is stopped by its context.
func (e *Exporter) abort(id string, cause error) {
	e.mu.Lock()
	rn := e.runs[id]
	if rn == nil {
		e.mu.Unlock()
		return
	}
	rn.cancel(cause) // before forget, which counts the end by its cause
	queued := false
	if i := slices.Index(e.queue, rn); i >= 0 {
		e.queue = slices.Delete(e.queue, i, i+1)
		e.forget(rn)
		queued = true
	}
	e.mu.Unlock()
	if queued {
		rn.closeReader()
	}
}

// startListening starts the background goroutines if they are not running and
// returns the channel closed once the listener is subscribed (nil once
// Shutdown stopped it), and whether this call started them.
func (e *Exporter) startListening() (ready chan struct{}, started bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return nil, false
	}
	started = !e.background
	e.startBackground()
	return e.listening, started
}

// startBackground starts the lease keeper, the event listener and the
// eviction check once.
// e.mu is held.
func (e *Exporter) startBackground() {
	if e.background {
		return
	}
	e.background = true
	e.listening = make(chan struct{})
	e.wg.Add(3)
	go e.keepLeases()
	go e.listen(e.listening)
	go e.checkEviction()
}

// keepLeases renews the lease of every held run every LeaseTTL/3, all of
// them in one Store.Renew (a round trip per thousand runs, however many
// this Exporter holds). A run whose lease is gone (cancelled, or lapsed while
// the store was away) is stopped: this is the path that catches a lost
// cancel event. A pass that fails for some run (the store is away) is
// tried again soon, with backoff that never waits longer than
// LeaseTTL/10, so a short outage costs no lease that had time left.
func (e *Exporter) keepLeases() {
	defer e.wg.Done()
	interval := e.cfg.LeaseTTL / 3
	retry := minRenewRetry
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-e.leases.Done():
			return
		case <-t.C:
		}
		e.mu.Lock()
		runs := make([]*run, 0, len(e.runs))
		for _, rn := range e.runs {
			runs = append(runs, rn)
		}
		e.mu.Unlock()
		// Longest unrenewed first: a pass cut short by its deadline (a
		// store slower than the lease allows) leaves the freshest leases.
		slices.SortFunc(runs, func(a, b *run) int { return a.renewed.Compare(b.renewed) })
		held := make([]Held, len(runs))
		for i, rn := range runs {
			held[i] = Held{ID: rn.job.ID, Owner: rn.job.Owner, Lease: rn.lease}
		}
		// A pass over many runs may take longer than an interval: it has
		// until the lease's end (the next pass starts when it ends).
		passed := time.Now()
		ctx, cancel := context.WithTimeout(e.leases, e.cfg.LeaseTTL)
		errs := e.store.Renew(ctx, e.cfg.Retention, held)
		cancel()
		failed := 0
		var last error
		for i, err := range errs {
			rn := runs[i]
			switch {
			case err == nil:
				rn.renewed = passed
			case rn.ctx.Err() != nil:
				// Stopped already (a cancel, Shutdown): its end is being
				// recorded, which is what took its lease.
			case errors.Is(err, ErrLeaseLost), errors.Is(err, ErrNotFound):
				cause := e.lostCause(rn)
				rn.log.Info("export lease lost", "cause", cause)
				e.abort(rn.job.ID, cause)
			case e.leases.Err() != nil:
				return
			default:
				failed++
				last = err
			}
		}
		if failed > 0 {
			e.log.Warn("export lease renewal failed", "exports", failed, "err", last, "retry", min(retry, e.renewRetryCap()))
			t.Reset(min(retry, e.renewRetryCap()))
			retry *= 2
		} else {
			// Passes start every interval: a pass that took long (many
			// runs, a busy machine) delays the next one by no more than it
			// took, so a lease is renewed every max(interval, pass).
			t.Reset(max(interval-time.Since(passed), 0))
			retry = minRenewRetry
		}
	}
}

// renewRetryCap is the longest wait before a failed renewal is tried
// again: short enough that several tries fall within the lease's time
// left, so that renewals resume soon after the store is back.
func (e *Exporter) renewRetryCap() time.Duration {
	return max(e.cfg.LeaseTTL/10, minRenewRetry)
}

// lostCause tells why the lease of rn is gone: ErrCancelled if the job
// reads cancelled (a cancel whose event did not reach this instance), else
// ErrLeaseLost. It costs a read, on this rare path only, so that metrics
// and logs count a cancel as one.
func (e *Exporter) lostCause(rn *run) error {
	ctx, cancel := context.WithTimeout(e.base, e.cfg.LeaseTTL/3)
	defer cancel()
	if job, err := e.store.Get(ctx, rn.job.ID, rn.job.Owner); err == nil && job.Status == StatusCancelled {
		return ErrCancelled
	}
	return ErrLeaseLost
}

// minRenewRetry is the first delay before a failed renewal is tried again.
const minRenewRetry = 50 * time.Millisecond

// GetExportStatus returns the job id. Only its owner and holders of
// Config.AdminPermission may see it; for anyone else, and for unknown,
// malformed or expired ids, the error wraps ErrNotFound. It costs one
// round trip to the store.
func (e *Exporter) GetExportStatus(ctx context.Context, user User, id string) (*Job, error) {
	job, err := e.visible(ctx, user, id)
	if err != nil {
		return nil, fmt.Errorf("exporter: status %s: %w", id, err)
	}
	return job, nil
}

// visible reads job id and checks that user may see it. The owner's read
// is one round trip; another user's costs an admin check and a second
// read, and changes nothing unless that user is an admin.
func (e *Exporter) visible(ctx context.Context, user User, id string) (*Job, error) {
	return e.asOwnerOrAdmin(ctx, user, id, func(owner string) (*Job, error) {
		return e.store.Get(ctx, id, owner)
	})
}

// asOwnerOrAdmin runs op for user's own job (op(user.ID)) and, if that
// finds nothing, for an admin on anyone's job (op("")). A failing checker
// answers alike for an unknown id and another user's job.
func (e *Exporter) asOwnerOrAdmin(ctx context.Context, user User, id string, op func(owner string) (*Job, error)) (*Job, error) {
	if !user.authenticated() {
		return nil, ErrUnauthenticated
	}
	if !validID(id) {
		return nil, ErrNotFound
	}
	job, err := op(user.ID)
	if !errors.Is(err, ErrNotFound) {
		return job, err
	}
	if err := e.admin(ctx, user); err != nil {
		return nil, err
	}
	return op("")
}

// admin returns nil if user holds Config.AdminPermission, an error
// wrapping ErrNotFound if not, and one wrapping ErrForbidden and the
// checker's error if the checker failed.
func (e *Exporter) admin(ctx context.Context, user User) error {
	if e.cfg.AdminPermission == "" {
		return ErrNotFound
	}
	ok, err := e.cfg.Permissions.HasPermission(ctx, user, e.cfg.AdminPermission)
	if err != nil {
		return fmt.Errorf("%w: permission check: %w", ErrForbidden, err)
	}
	if !ok {
		return ErrNotFound
	}
	return nil
}

// CancelExport cancels job id for its owner or an admin. On a pending or
// running job it records StatusCancelled atomically before it returns;
// from then on no byte is stored, the stored bytes are removed, and the
// instance that runs the job closes its source promptly. Cancelling a
// cancelled job returns it with a nil error; a completed or failed job is
// returned unchanged with an error wrapping ErrFinished. Other errors wrap
// ErrUnauthenticated or ErrNotFound, or are the store's.
func (e *Exporter) CancelExport(ctx context.Context, user User, id string) (*Job, error) {
	job, err := e.asOwnerOrAdmin(ctx, user, id, func(owner string) (*Job, error) {
		return e.store.Cancel(ctx, id, owner, ErrCancelled.Error())
	})
	if job != nil && job.Status == StatusCancelled {
		// Stop a local run now rather than when the event arrives.
		e.abort(id, ErrCancelled)
	}
	if err != nil {
		return job, fmt.Errorf("exporter: cancel %s: %w", id, err)
	}
	e.log.InfoContext(ctx, "export cancelled", "job", id, "owner", job.Owner, "by", user.ID)
	return job, nil
}

// OpenExport returns a Download of completed job id for its owner or an
// admin. Errors wrap ErrUnauthenticated, ErrNotFound, or ErrNotReady when
// the job exists but has not completed. The Download reads from the store
// under ctx: cancelling ctx ends its reads.
func (e *Exporter) OpenExport(ctx context.Context, user User, id string) (*Download, error) {
	job, err := e.visible(ctx, user, id)
	if err == nil && job.Status != StatusCompleted {
		err = fmt.Errorf("%w: status %s", ErrNotReady, job.Status)
	}
	if err != nil {
		return nil, fmt.Errorf("exporter: open %s: %w", id, err)
	}
	return newDownload(ctx, e.store, job), nil
}

// Shutdown stops the Exporter: new starts get ErrClosed at once; running
// and pending exports may finish until ctx is done; then the rest are
// failed ("exporter shut down") and their sources closed. Every goroutine
// the Exporter started has returned when Shutdown returns (but see below
// for sources that ignore Close). It returns nil if every export
// finished, else ctx's error. Calling it again is safe.
//
// GetExportStatus, CancelExport, WaitExport and OpenExport keep working
// after Shutdown: they only use the store.
//
// A source whose Read or Close ignores Close and blocks for good cannot be
// stopped: once ctx is done and the grace period after closing the sources
// has passed, Shutdown records the export's end, returns an error saying
// how many sources are stuck, and leaves their goroutines to return when
// the source does.
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	first := !e.closed // only the first call logs
	e.closed = true
	e.checkIdle()
	e.mu.Unlock()

	var err error
	select {
	case <-e.idle:
	case <-ctx.Done():
		err = ctx.Err()
		e.mu.Lock()
		queued := e.queue
		e.queue = nil // endAll forgets them once their end is recorded
		running := make([]*run, 0, len(e.runs))
		for _, rn := range e.runs {
			running = append(running, rn)
		}
		e.mu.Unlock()
		// Stop every run; each closes its source and records its end.
		// Shutdown records the ends too, in case a source does not return
		// from Read: a repeated end is harmless.
		e.stop(ErrClosed)
		e.endAll(queued, running)
		for _, rn := range queued {
			e.wg.Add(1)
			go func() { // a Close that blocks must not hold Shutdown
				defer e.wg.Done()
				rn.closeReader()
			}()
		}
	}
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
	e.stop(ErrClosed)
	e.stopLeases()
	defer e.unregisterGauges()
	if err == nil {
		e.wg.Wait()
		if first {
			e.log.Info("exporter shut down")
		}
		return nil
	}
	// Sources were closed; their Reads and Closes get a grace period to
	// return. One that ignores Close cannot be stopped: Shutdown reports
	// it rather than wait forever.
	done := make(chan struct{})
	go func() {
		e.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(shutdownGrace):
		e.mu.Lock()
		stuck := len(e.runs)
		e.mu.Unlock()
		err = errors.Join(err, fmt.Errorf("exporter: shutdown: exports still stopping %v after their sources were closed: %d (in a source's Read or Close, or recording their end in a store that does not answer); their goroutines are left running", shutdownGrace, stuck))
	}
	e.log.Warn("exporter shut down before its exports finished", "err", err)
	return err
}

// endAll stops the runs of queue (pending) and running, records their
// ends shutdownEnders at a time, and forgets the pending ones. The lease
// keeper renews the leases of those not ended yet meanwhile.
func (e *Exporter) endAll(queue, running []*run) {
	queued := make(map[*run]bool, len(queue)) // no worker holds them: forgotten here
	for _, rn := range queue {
		queued[rn] = true
	}
	runs := append(queue, running...)
	todo := make(chan *run)
	var wg sync.WaitGroup
	for range min(shutdownEnders, len(runs)) {
		wg.Add(1)
		go func() { // owned: endAll waits for it
			defer wg.Done()
			for rn := range todo {
				rn.cancel(ErrClosed)
				// A run stopped for another reason first (a cancel) ends for
				// that one; one that just finished needs no end.
				if cause := context.Cause(rn.ctx); !errors.Is(cause, errRunDone) {
					e.end(rn, cause)
				}
				if queued[rn] {
					e.mu.Lock()
					e.forget(rn)
					e.mu.Unlock()
				}
			}
		}()
	}
	for _, rn := range runs {
		todo <- rn
	}
	close(todo)
	wg.Wait()
}

// shutdownEnders is how many ends Shutdown records at once.
const shutdownEnders = 32

// shutdownGrace is how long Shutdown waits, once its ctx is done and the
// sources are closed, for the goroutines still in a source's Read or Close.
const shutdownGrace = 2 * time.Second

// end records that rn failed with cause, unless cause means someone else
// already ended it (a cancel, a lost lease). The write does not depend on
// rn's context, which is done by now, but is bounded by LeaseTTL.
func (e *Exporter) end(rn *run, cause error) {
	if errors.Is(cause, ErrCancelled) || errors.Is(cause, ErrLeaseLost) {
		return
	}
	first := e.settle(rn, StatusFailed)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(rn.ctx), e.cfg.LeaseTTL)
	defer cancel()
	w := ChunkWrite{Final: StatusFailed, Reason: truncate(cause.Error(), maxReason)}
	var err error
	if errors.Is(cause, ErrClosed) {
		// Shutting down: one attempt, so a store that is away does not hold
		// Shutdown; the lease lapses instead.
		err = e.store.Write(ctx, rn.job.ID, rn.lease, w)
	} else {
		err = e.write(ctx, rn, w)
	}
	if err != nil && !errors.Is(err, ErrLeaseLost) {
		rn.log.Warn("recording export failure failed; its lease will lapse", "err", err)
	}
	if first { // Shutdown and the run itself may both record the end
		rn.log.Info("export failed", "err", cause)
	}
}

// settle records how rn ended, for its count in forget. The first
// status settled wins; settle reports whether it was this one.
func (e *Exporter) settle(rn *run, s Status) (first bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if rn.final != "" {
		return false
	}
	rn.final = s
	return true
}

// newToken returns a random lease token.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// mergeValues returns a context that is cancelled with parent and carries
// the values of values.
func mergeValues(parent, values context.Context) context.Context {
	return valuesContext{Context: parent, values: values}
}

type valuesContext struct {
	context.Context
	values context.Context
}

// Value looks in parent first: it holds no values of the caller's, only
// the context package's own, which must resolve to parent so that
// cancellation propagates without a goroutine.
func (c valuesContext) Value(key any) any {
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.values.Value(key)
}

// maxReason bounds Job.Error: a source's error text is the service's, but
// it is stored and sent to every instance with the end event.
const maxReason = 1024

// truncate cuts s to at most n bytes on a UTF-8 boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
