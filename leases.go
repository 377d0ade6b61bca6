package exporter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"time"
)

// Leases: the lease keeper renews the lease of every run this Exporter
// holds, and stops a run whose lease is gone.

// keepLeases renews the lease of every held run every LeaseTTL/3, all of
// them in one Store.Renew (a round trip per thousand runs, however many
// this Exporter holds). A run whose lease is gone (cancelled, or lapsed while
// the store was away) is stopped: this is the path that catches a lost
// cancel event. A pass that fails for some run (the store is away) is
// tried again soon, with backoff that never waits longer than
// LeaseTTL/10, so a short outage costs no lease that had time left.
func (e *Exporter) keepLeases() {
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
		runs := e.sched.held()
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
				e.sched.abort(rn.job.ID, cause)
			case e.leases.Err() != nil:
				return
			default:
				failed++
				last = err
			}
		}
		if failed > 0 {
			e.log.Warn("export lease renewal failed", "exports", failed, "err", last, "retry", retry)
			t.Reset(retry)
			// Capped as it grows: doubled without end, it would overflow
			// during a long outage and the keeper would spin.
			retry = min(2*retry, e.renewRetryCap())
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

// newToken returns a random lease token.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
