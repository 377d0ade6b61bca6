package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Durable exports: Enqueue records an export of a kind, and any Exporter
// whose Config.Sources has the kind runs it, in attempts. An attempt
// opens the kind's Source at the offset the earlier attempts stored, and
// carries the SHA-256 on from their state; an attempt that stops without
// ending the export (its process died, Shutdown handed it back, its
// source failed) leaves the export queued for the next.

// Source opens the bytes of a durable export of one kind, from offset on:
// 0 at the first attempt; the number of bytes already stored (Job.Bytes)
// when an attempt resumes an export that an earlier attempt left
// unfinished. The bytes it returns from offset on must be those an
// attempt from 0 would have read there: the export's checksum covers them
// all. A source that cannot seek can skip offset bytes (see SkipReader).
//
// ctx lives as long as the attempt; the reader is closed, if it is an
// io.Closer, when the attempt ends, however it ends. An error, of the
// Source or of the reader, fails the attempt: the export is tried again
// after a backoff, unless it wraps ErrPermanent or was the last attempt
// (Config.MaxAttempts).
type Source func(ctx context.Context, job *Job, offset int64) (io.Reader, error)

// ErrPermanent, wrapped by a Source's or a reader's error, fails a durable
// export at once instead of retrying it.
var ErrPermanent = errors.New("permanent failure")

// MaxArgs bounds Enqueue's args.
const MaxArgs = 64 << 10

// maxKind bounds a kind's name.
const maxKind = 128

// validKind reports whether kind can name a kind of durable export.
func validKind(kind string) bool {
	return kind != "" && len(kind) <= maxKind && utf8.ValidString(kind) &&
		strings.IndexFunc(kind, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }) < 0
}

// Backoff of a durable export's retries: the first after at most
// retryFirst, doubling up to retryMost, each with jitter (half to all of
// it), so that exports failed by one outage do not come back together.
const (
	retryFirst = time.Second
	retryMost  = 30 * time.Second
)

// retryDelay is the wait before the attempt after attempt n (1-based).
func retryDelay(n int) time.Duration {
	d := retryMost
	if n < 6 {
		d = min(retryFirst<<(n-1), retryMost)
	}
	return d/2 + rand.N(d/2+1)
}

// attempt is what a durable export's run resumes from.
type attempt struct {
	source Source
	chunks int64  // stored when it began
	bytes  int64  // their size
	hash   []byte // their SHA-256 state; nil when none is stored
	left   int    // attempts left after this one
}

// Enqueue records a pending durable export of kind for user, with args
// for its Source, and returns it at once. Any Exporter on the same store
// whose Config.Sources has kind may run it. kind must be in this
// Exporter's Config.Sources (else ErrInvalid). StartOptions (WithTotal,
// WithMetadata) apply as for StartExport.
//
// Enqueue never refuses an export for capacity: MaxPending and MaxPerUser
// bound what runs, and queued exports wait in the store (its memory and
// Config.Retention bound the queue: an export still queued when its
// retention passes is gone). Errors wrap ErrUnauthenticated, ErrForbidden,
// ErrInvalid (an unknown kind, args beyond MaxArgs, bad options),
// ErrTooLarge (WithTotal above MaxBytes), ErrClosed (after Shutdown), or
// are the store's; as with StartExport, an export whose reply was lost is
// removed in the background, so a caller told it failed never sees it run.
func (e *Exporter) Enqueue(ctx context.Context, user User, kind string, args []byte, opts ...StartOption) (*Job, error) {
	job, err := e.enqueue(ctx, user, kind, args, opts)
	if err != nil {
		return nil, fmt.Errorf("exporter: enqueue: %w", err)
	}
	return job, nil
}

func (e *Exporter) enqueue(ctx context.Context, user User, kind string, args []byte, opts []StartOption) (*Job, error) {
	if !user.authenticated() {
		return nil, ErrUnauthenticated
	}
	if e.sched.isClosed() {
		return nil, ErrClosed
	}
	// The permission first: a user without it learns nothing of the kinds
	// (kind and args come from end users, through a service's handler).
	if err := e.require(ctx, user, e.cfg.Permission); err != nil {
		return nil, err
	}
	if _, ok := e.cfg.Sources[kind]; !ok {
		return nil, fmt.Errorf("%w: kind %s is not in Config.Sources", ErrInvalid, quoteCapped(kind))
	}
	if len(args) > MaxArgs {
		return nil, fmt.Errorf("%w: args of %d bytes, at most %d", ErrInvalid, len(args), MaxArgs)
	}
	o, err := applyOptions(opts, e.cfg.MaxBytes)
	if err != nil {
		return nil, err
	}
	id := uuid.NewString()
	job := &Job{ID: id, Owner: user.ID, Status: StatusPending, Total: o.total, Metadata: o.metadata,
		ChunkSize: e.cfg.ChunkSize, Kind: kind, Args: slices.Clone(args)}
	token := newToken()
	log := e.log.With("job", id, "owner", user.ID, "kind", kind)
	stored, err := e.queue.Enqueue(ctx, job, token, e.cfg.MaxAttempts, e.cfg.Retention)
	if err != nil {
		if !errors.Is(err, ErrInvalid) {
			e.abandon(id, Lease{Token: token}, log)
		}
		return nil, err
	}
	log.InfoContext(ctx, "export enqueued", "total", o.total)
	return stored.clone(), nil
}

// kinds returns the kinds of Config.Sources, sorted.
func (e *Exporter) kinds() []string {
	kinds := make([]string, 0, len(e.cfg.Sources))
	for k := range e.cfg.Sources {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	return kinds
}

// wakeClaimer tells the claimer to look at the queue: a run slot came
// free, or an export of one of its kinds became ready.
func (e *Exporter) wakeClaimer() {
	select {
	case e.claimWake <- struct{}{}:
	default:
	}
}

// claimPoll is how often an idle claimer looks at the queue without being
// woken (the wake-ups are pub/sub events, which can be lost).
const claimPoll = time.Second

// readyTimer is what a Queue can tell a claimer that found nothing to
// take: when an export it knows of becomes ready (one queued with a delay,
// a retry), so that the claimer looks then rather than at its next poll.
// The zero time: look again now.
type readyTimer interface {
	nextReady(kinds []string) time.Time
}

// claimWait is how long the claimer sleeps, unless woken, after a claim
// that took fewer exports than it had slots for: until the queue's next
// export is ready, if the queue knows, and claimPoll at most.
func (e *Exporter) claimWait(kinds []string) time.Duration {
	q, ok := e.queue.(readyTimer)
	if !ok {
		return claimPoll
	}
	next := q.nextReady(kinds)
	if next.IsZero() {
		return claimNow
	}
	return min(max(time.Until(next), claimNow), claimPoll)
}

// claimNow is the claimer's shortest sleep, so that a shard that keeps
// answering "ready now" without giving anything cannot make it spin.
const claimNow = 5 * time.Millisecond

// claim takes durable exports from the queue while this Exporter has a
// free run slot, and starts an attempt of each. It is one of the
// background goroutines of an Exporter with Sources.
func (e *Exporter) claim() {
	kinds := e.kinds()
	t := time.NewTimer(0)
	defer t.Stop()
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-e.base.Done():
			return
		case <-e.claimWake:
		case <-t.C:
		}
		failed, short := false, false
		for e.base.Err() == nil {
			// As many as there are free run slots, in one Claim.
			n := e.sched.reserveSlots()
			if n == 0 {
				break // a slot that comes free wakes the claimer
			}
			leases := make([]Lease, n)
			for i := range leases {
				leases[i] = Lease{Token: newToken(), TTL: e.cfg.LeaseTTL}
			}
			ctx, cancel := context.WithTimeout(e.base, e.cfg.LeaseTTL)
			claims, err := e.queue.Claim(ctx, kinds, e.cfg.MaxPerUser, leases)
			cancel()
			for _, c := range claims {
				e.startAttempt(c)
			}
			for range n - len(claims) {
				e.sched.unreserveSlot()
			}
			if err != nil && e.base.Err() == nil {
				e.log.Warn("claiming durable exports failed", "err", err, "retry", backoff)
				failed = true
			}
			if err != nil || len(claims) < n {
				short = true
				break
			}
		}
		switch {
		case failed:
			t.Reset(backoff)
			backoff = min(2*backoff, claimPoll)
		case short:
			t.Reset(e.claimWait(kinds))
			backoff = 50 * time.Millisecond
		default:
			t.Reset(claimPoll)
			backoff = 50 * time.Millisecond
		}
	}
}

// startAttempt runs the attempt that c began, in the run slot the
// claimer reserved.
func (e *Exporter) startAttempt(c *Claim) {
	job, lease := c.Job, c.Lease
	rn := &run{
		job:     job,
		log:     e.log.With("job", job.ID, "owner", job.Owner, "kind", job.Kind, "attempt", job.Attempt),
		start:   time.Now(),
		renewed: time.Now(),
		lease:   lease,
		attempt: &attempt{source: e.cfg.Sources[job.Kind], chunks: c.Chunks, bytes: job.Bytes, hash: c.Hash, left: c.Left},
	}
	rn.ctx, rn.cancel = context.WithCancelCause(e.base)
	if err := e.sched.holdAttempt(rn); err != nil {
		// Shutdown began since the claim: hand the attempt back at once.
		rn.cancel(err)
		e.sched.unreserveSlot()
		e.endAttempt(rn, ErrClosed)
		return
	}
	rn.log.Info("export attempt begun", "offset", job.Bytes)
}

// openSource opens the Source of rn's attempt, at the offset it resumes
// from. A panicking Source is an error.
func (e *Exporter) openSource(rn *run) (r io.Reader, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("Source panicked: %v", p)
		}
	}()
	r, err = rn.attempt.source(rn.ctx, rn.job.clone(), rn.attempt.bytes)
	if err == nil && r == nil {
		err = errors.New("Source returned a nil reader")
	}
	return r, err
}

// endAttempt records how a durable export's attempt that failed with
// cause ends: handed back (Shutdown gave up on it), failed at once
// (ErrPermanent, too large, corrupt, or its last attempt), or queued for
// a retry after a backoff.
func (e *Exporter) endAttempt(rn *run, cause error) {
	first := rn.settleFailed(cause)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(rn.ctx), e.cfg.LeaseTTL)
	defer cancel()
	a := rn.attempt
	reason := &Reason{Text: truncate(cause.Error(), maxReason), Code: codeOf(cause)}
	switch {
	case errors.Is(cause, ErrClosed):
		// Handed back: any instance resumes it, and it does not count.
		err := e.queue.Release(ctx, rn.job, rn.lease, nil, 0)
		if err != nil && !errors.Is(err, ErrLeaseLost) {
			rn.log.Warn("handing back a durable export failed; it is resumed once its lease lapses", "err", err)
		} else if first {
			rn.log.Info("durable export handed back", "bytes", rn.job.Bytes)
		}
	case a.left > 0 && !errors.Is(cause, ErrPermanent) && !errors.Is(cause, ErrTooLarge) && !errors.Is(cause, ErrCorrupt):
		delay := retryDelay(rn.job.Attempt)
		err := e.queue.Release(ctx, rn.job, rn.lease, reason, delay)
		if err != nil && !errors.Is(err, ErrLeaseLost) {
			rn.log.Warn("queueing a failed durable export again failed; it is resumed once its lease lapses", "err", err)
		}
		if first {
			rn.log.Info("export attempt failed; it will be retried", "err", cause, "retry", delay, "attempts_left", a.left)
		}
	default:
		err := e.write(ctx, rn, ChunkWrite{Final: StatusFailed, Reason: reason.Text, Code: reason.Code})
		if err != nil && !errors.Is(err, ErrLeaseLost) {
			rn.log.Warn("recording export failure failed; it is resumed once its lease lapses", "err", err)
			return
		}
		e.settleQueue(rn)
		if first {
			rn.log.Info("export failed", "err", cause, "attempt", rn.job.Attempt)
		}
	}
}

// settleQueue tells the queue that the durable export of rn ended. Should
// it fail, the recoverer settles it when its check is due.
func (e *Exporter) settleQueue(rn *run) {
	if rn.attempt == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(rn.ctx), e.cfg.LeaseTTL)
	defer cancel()
	if err := e.queue.Settle(ctx, rn.job); err != nil {
		rn.log.Debug("settling a durable export's attempt failed; the recoverer will", "err", err)
	}
}

// recoverEvery is how often an Exporter with Sources looks for attempts
// whose lease lapsed: a lost attempt is resumed within LeaseTTL and about
// this much more.
func (e *Exporter) recoverEvery() time.Duration {
	return min(max(e.cfg.LeaseTTL/4, 50*time.Millisecond), 500*time.Millisecond)
}

// recoverAttempts queues again the durable exports whose attempt lapsed,
// on any instance. It is one of the background goroutines of an Exporter
// with Sources; every such Exporter runs it (the queue hands each lapsed
// attempt to one of them).
func (e *Exporter) recoverAttempts() {
	every := e.recoverEvery()
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-e.base.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(e.base, e.cfg.LeaseTTL)
		n, err := e.queue.Recover(ctx)
		cancel()
		switch {
		case err != nil && e.base.Err() == nil:
			e.log.Debug("recovering lapsed durable exports failed", "err", err)
		case n > 0:
			e.log.Info("durable exports whose attempt lapsed were queued again", "exports", n)
			e.wakeClaimer()
		}
		t.Reset(every)
	}
}

// SkipReader returns r after it has read and discarded offset bytes of
// it: a Source whose data cannot start at an offset resumes with it. It
// returns an error if r ends first.
func SkipReader(r io.Reader, offset int64) (io.Reader, error) {
	n, err := io.CopyN(io.Discard, r, offset)
	if n < offset {
		if err == nil || err == io.EOF {
			err = fmt.Errorf("%w: the source ended at %d bytes, before the offset %d", ErrPermanent, n, offset)
		}
		return nil, err
	}
	return r, nil
}
