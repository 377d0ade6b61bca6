package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// The scheduler: the runs this Exporter holds (pending and running), the
// counts that bound them, the queue of pending runs and the workers that
// execute them.

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
