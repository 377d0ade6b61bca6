package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

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
	wg         sync.WaitGroup // every goroutine the Exporter starts
	sched      *scheduler     // the runs this Exporter holds
	queue      Queue          // the store's, when Config.Sources is set
	claimWake  chan struct{}  // wakes the claimer (durable exports)
	bufs       bufferPool     // chunk buffers of cfg.ChunkSize

	mu         sync.Mutex
	background bool          // the lease keeper and event listener are started
	listening  chan struct{} // closed once the listener is subscribed (nil before)

	waitersMu sync.Mutex
	waiters   map[string]map[chan Event]struct{} // WaitExport calls by job id

	// What the instance reports of itself (instance.go).
	instanceID, host string
	started          time.Time
}

// New returns an Exporter on store. It validates cfg (an error wrapping
// ErrInvalid names the field). Without Config.Sources it does no I/O:
// background goroutines start with the first export; with Sources they
// start here, and the Exporter claims durable exports at once.
func New(store Store, cfg Config) (*Exporter, error) {
	e, err := newExporter(store, cfg)
	if err != nil {
		return nil, fmt.Errorf("exporter: new: %w", err)
	}
	return e, nil
}

func newExporter(store Store, cfg Config) (*Exporter, error) {
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
		waiters:    make(map[string]map[chan Event]struct{}),
		bufs:       bufferPool{size: cfg.ChunkSize},
		started:    time.Now(),
	}
	e.instanceID, e.host = newInstanceID()
	e.sched = newScheduler(cfg, &e.wg, e.execute)
	ins, err := newInstruments(cfg.MeterProvider, e.sched.counts)
	if err != nil {
		stop(nil)
		return nil, fmt.Errorf("metrics: %w", err)
	}
	e.ins, e.sched.ins = ins, ins
	if len(cfg.Sources) > 0 {
		q, ok := store.(Queue)
		if !ok {
			stop(nil)
			return nil, fmt.Errorf("%w: Config.Sources needs a Store that implements Queue, not %T", ErrInvalid, store)
		}
		e.queue, e.claimWake = q, make(chan struct{}, 1)
		e.sched.freed = e.wakeClaimer
		e.startListening() // durable exports are claimed from now on
	}
	return e, nil
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
	o, err := applyOptions(opts, e.cfg.MaxBytes)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := e.require(ctx, user, e.cfg.Permission); err != nil {
		return nil, err
	}
	if err := e.sched.admit(user.ID); err != nil {
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
		e.sched.withdraw(user.ID)
		if !errors.Is(err, ErrInvalid) {
			e.abandon(rn.job.ID, rn.lease, rn.log) // the creation may yet be applied: its caller is told it failed
		}
		return nil, err
	}
	rn.job = job
	if err := e.sched.hold(rn); err != nil {
		// Shutdown stopped waiting while the job was being created.
		rn.cancel(err)
		e.fail(rn, err)
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

// abandon undoes, in the background, the creation of job id, which
// StartExport reports failed although it may have been applied (its reply
// was late or lost, say after ctx's deadline): a job nobody was told
// about must not be left to lapse and read "worker lost". It tries for up
// to LeaseTTL, the time the job would take to lapse, and gives up at
// Shutdown.
func (e *Exporter) abandon(id string, lease Lease, log *slog.Logger) {
	e.sched.spawn(func() {
		ctx, cancel := context.WithTimeout(e.base, e.cfg.LeaseTTL)
		defer cancel()
		backoff := 20 * time.Millisecond
		for {
			err := e.store.Abandon(ctx, id, lease)
			if err == nil {
				log.Debug("abandoned export creation undone")
				return
			}
			if !e.retryable(err) || !sleepCtx(ctx, backoff) {
				log.Warn("undoing an abandoned export creation failed; if it was recorded, it will read failed (worker lost) or, if durable, run", "err", err)
				return
			}
			backoff = min(2*backoff, e.cfg.LeaseTTL/8)
		}
	})
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

// startListening starts the background goroutines (the lease keeper, the
// event listener and the eviction check) once, unless Shutdown stopped
// them, and returns the channel closed once the listener is subscribed
// (nil if they are not running), and whether this call started them.
func (e *Exporter) startListening() (ready chan struct{}, started bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.sched.isStopped() {
		return nil, false // Shutdown stopped them
	}
	if e.background {
		return e.listening, false
	}
	listening := make(chan struct{})
	if !e.sched.spawn(func() { e.listen(listening) }) {
		return nil, false
	}
	e.background = true
	e.listening = listening
	e.sched.spawn(e.keepLeases)
	e.sched.spawn(e.checkEviction)
	if _, ok := e.store.(InstanceBoard); ok {
		e.sched.spawn(e.reportInstance)
	}
	if e.queue != nil {
		e.sched.spawn(e.claim)
		e.sched.spawn(e.recoverAttempts)
	}
	return listening, true
}

// GetExportStatus returns the job id. Only its owner and holders of
// Config.AdminPermission may see it; for anyone else, and for unknown,
// malformed or expired ids, the error wraps ErrNotFound. It costs one
// round trip to the store.
func (e *Exporter) GetExportStatus(ctx context.Context, user User, id string) (*Job, error) {
	job, err := e.visible(ctx, user, id)
	if err != nil {
		return nil, fmt.Errorf("exporter: status %s: %w", idText(id), err)
	}
	return job, nil
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
		e.sched.abort(id, ErrCancelled)
	}
	if err != nil {
		return job, fmt.Errorf("exporter: cancel %s: %w", idText(id), err)
	}
	e.log.InfoContext(ctx, "export cancelled", "job", id, "owner", job.Owner, "by", user.ID)
	return job, nil
}

// OpenExport returns a Download of completed job id for its owner or an
// admin. Errors wrap ErrUnauthenticated, ErrNotFound, or ErrNotReady when
// the job exists but has not completed; that error is a *NotReadyError,
// which carries the job (errors.As), so a caller can say how far it is
// without a second read. The Download reads from the store under ctx:
// cancelling ctx ends its reads.
func (e *Exporter) OpenExport(ctx context.Context, user User, id string) (*Download, error) {
	job, err := e.visible(ctx, user, id)
	if err == nil && job.Status != StatusCompleted {
		err = &NotReadyError{Job: job}
	}
	if err != nil {
		return nil, fmt.Errorf("exporter: open %s: %w", idText(id), err)
	}
	return newDownload(ctx, e.store, job), nil
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
