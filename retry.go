package exporter

import (
	"context"
	"errors"
	"time"
)

// Writes are safe to repeat (see Store.Write), so the Exporter repeats a
// write that failed for a reason that may pass (a dropped connection, a
// restarting server) for as long as the run's lease can survive it: a
// short outage then delays an export instead of failing it.

// retryable reports whether a store call that failed with err is worth
// repeating: never for the library's verdicts (a lost lease, a missing or
// corrupt job, an invalid argument) or the caller's context; otherwise as
// the store says (Store.Transient).
func (e *Exporter) retryable(err error) bool {
	if err == nil {
		return false
	}
	for _, final := range []error{ErrLeaseLost, ErrNotFound, ErrCorrupt, ErrNotReplicated, ErrInvalid,
		context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, final) {
			return false
		}
	}
	return e.store.Transient(err)
}

// write is store.Write for the run rn, repeated with backoff while it
// fails transiently, for at most two thirds of the lease TTL (the lease was
// renewed by the last write that succeeded). The backoff doubles up to
// LeaseTTL/10 (at most a second), and the last wait is cut to end at the
// window's end, so the last attempt is made inside the window rather than
// given up because a full backoff would overshoot it.
func (e *Exporter) write(ctx context.Context, rn *run, w ChunkWrite) error {
	deadline := time.Now().Add(e.cfg.LeaseTTL * 2 / 3)
	backoff, most := 20*time.Millisecond, min(max(e.cfg.LeaseTTL/10, 20*time.Millisecond), time.Second)
	for {
		err := e.store.Write(ctx, rn.job.ID, rn.lease, w)
		if err == nil {
			e.countStored(ctx, w.Chunks)
			return nil
		}
		left := time.Until(deadline)
		if !e.retryable(err) || left <= 0 {
			return err
		}
		wait := min(backoff, left)
		rn.log.DebugContext(ctx, "export write failed; repeating it", "err", err, "backoff", wait)
		if !sleepCtx(ctx, wait) {
			return err
		}
		backoff = min(2*backoff, most)
	}
}
