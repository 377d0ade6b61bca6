package exporter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Shutdown, and how a run that is given up on records its end.

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
	idle, first := e.sched.close() // only the first call logs

	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		err = fmt.Errorf("exporter: shutdown: %w", ctx.Err())
		// endAll drops the pending runs once their end is recorded.
		pending, running := e.sched.drain()
		// Stop every run; each closes its source and records its end.
		// Shutdown records the ends too, in case a source does not return
		// from Read: a repeated end is harmless.
		e.stop(ErrClosed)
		e.endAll(pending, running)
		for _, rn := range pending {
			// A Close that blocks must not hold Shutdown.
			e.sched.spawn(rn.closeReader)
		}
	}
	e.sched.stop()
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
		stuck := e.sched.left()
		err = fmt.Errorf("%w; exports still stopping %v after their sources were closed: %d (in a source's Read or Close, or recording their end in a store that does not answer); their goroutines are left running", err, shutdownGrace, stuck)
	}
	e.log.Warn("exporter shut down before its exports finished", "err", err)
	return err
}

// endAll stops the runs of pending and running, records their ends
// shutdownEnders at a time, and drops the pending ones. The lease keeper
// renews the leases of those not ended yet meanwhile.
func (e *Exporter) endAll(pending, running []*run) {
	queued := make(map[*run]bool, len(pending)) // no worker holds them: dropped here
	for _, rn := range pending {
		queued[rn] = true
	}
	runs := append(pending, running...)
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
					e.fail(rn, cause)
				}
				if queued[rn] {
					e.sched.drop(rn)
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

// fail records that rn failed with cause, unless cause means someone else
// already ended it (a cancel, a lost lease). The write does not depend on
// rn's context, which is done by now, but is bounded by LeaseTTL.
func (e *Exporter) fail(rn *run, cause error) {
	if errors.Is(cause, ErrCancelled) || errors.Is(cause, ErrLeaseLost) {
		return
	}
	if rn.attempt != nil {
		e.endAttempt(rn, cause)
		return
	}
	first := rn.settleFailed(cause)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(rn.ctx), e.cfg.LeaseTTL)
	defer cancel()
	w := ChunkWrite{Final: StatusFailed, Reason: truncate(cause.Error(), maxReason), Code: codeOf(cause)}
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
