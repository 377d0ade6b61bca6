package exporter

import (
	"context"
	"fmt"
	"iter"
	"time"
)

// WatchOption configures one WatchExport call.
type WatchOption func(*watchOptions)

type watchOptions struct{ every time.Duration }

// DefaultWatchInterval is the least time between two progress snapshots
// of WatchExport.
const DefaultWatchInterval = 250 * time.Millisecond

// WatchEvery sets the least time between two progress snapshots (status
// changes are never held back longer than that). d <= 0 means
// DefaultWatchInterval.
func WatchEvery(d time.Duration) WatchOption {
	return func(o *watchOptions) { o.every = d }
}

// WatchExport returns the snapshots of job id as it progresses: the job as
// it is, then a snapshot whenever its status, Bytes or Read changed (at most one
// per WatchEvery interval), ending with the terminal one. The sequence
// ends after the terminal snapshot, at the first error (yielded with a nil
// job: those of GetExportStatus, or ctx's), or when the caller stops. As
// with WaitExport, a re-read after the first that fails for a reason that
// may pass is tried again at the next interval rather than ending the
// sequence.
// The first item is therefore the job as GetExportStatus would return it,
// or its error: an HTTP handler can take it first and answer 404 before it
// commits to a stream, as examples/httpserver does.
//
// Bytes advances a chunk (Job.ChunkSize) at a time; Read, the bytes read
// from the source, is recorded at least every second while the source
// delivers bytes, so progress shows inside a chunk: show Read.
//
// It is driven by store events, across instances: while it runs it marks
// the job as watched, and the instance that runs the job announces each
// store write; a slow re-read covers lost events. After Shutdown it
// re-reads every interval instead.
func (e *Exporter) WatchExport(ctx context.Context, user User, id string, opts ...WatchOption) iter.Seq2[*Job, error] {
	o := watchOptions{}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.every <= 0 {
		o.every = DefaultWatchInterval
	}
	return func(yield func(*Job, error) bool) {
		if err := e.watchExport(ctx, user, id, o.every, yield); err != nil {
			yield(nil, fmt.Errorf("exporter: watch %s: %w", idText(id), err))
		}
	}
}

// watchTTL is how long a watch mark lasts unless renewed.
const watchTTL = 10 * time.Second

func (e *Exporter) watchExport(ctx context.Context, user User, id string, every time.Duration, yield func(*Job, error) bool) error {
	if !user.authenticated() {
		return ErrUnauthenticated
	}
	if !validID(id) {
		return ErrNotFound
	}
	poll := e.pollInterval()
	wake, release, listening := e.addWaiter(ctx, id, poll)
	if listening {
		defer release()
	} else {
		poll = every
	}
	job, err := e.visible(ctx, user, id)
	if err != nil {
		return err
	}
	// Ask the running instance for progress events, before the first
	// snapshot so no write after it goes unannounced, and keep asking.
	marked := time.Time{}
	mark := func() {
		if listening && !job.Status.Terminal() && time.Since(marked) > watchTTL/3 {
			if err := e.store.Watch(ctx, id, watchTTL); err == nil {
				marked = time.Now()
			}
		}
	}
	mark()
	if !yield(job, nil) || job.Status.Terminal() {
		return nil
	}
	last, sent := job, time.Now()
	t := time.NewTimer(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-wake:
			if ev.Job != nil { // the end, carried by its event
				yield(ev.Job, nil)
				return nil
			}
		case <-t.C:
		}
		// At most one progress snapshot per interval; an end is not held.
		if wait := every - time.Since(sent); wait > 0 {
			if ended, err := e.holdOff(ctx, wake, wait); err != nil || ended != nil {
				if ended != nil {
					yield(ended, nil)
				}
				return err
			}
		}
		job, err := e.store.Get(ctx, id, "")
		if err != nil && !e.retryable(err) { // gone (expired), or ctx's end
			return err
		}
		if err != nil { // the store may be back at the next re-read
			e.log.DebugContext(ctx, "re-reading a watched export failed; trying again", "job", id, "err", err)
			t.Reset(poll)
			continue
		}
		if job.Status != last.Status || job.Bytes != last.Bytes || job.Read != last.Read {
			if !yield(job, nil) {
				return nil
			}
			last, sent = job, time.Now()
		}
		if job.Status.Terminal() {
			return nil
		}
		mark()
		t.Reset(poll)
	}
}

// holdOff waits d, or until ctx ends or an end event brings the ended job.
// Progress events during the wait are dropped: the read after it sees
// their progress.
func (e *Exporter) holdOff(ctx context.Context, wake chan Event, d time.Duration) (*Job, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case ev := <-wake:
			if ev.Job != nil {
				return ev.Job, nil
			}
		case <-t.C:
			return nil, nil
		}
	}
}
