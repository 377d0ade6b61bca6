package exporter

import (
	"context"
	"fmt"
	"time"
)

// Events: every Exporter holds one subscription to the store's events (a
// job reaching a terminal status, anywhere) while it runs. An event of a
// cancelled job stops the local run of that job; any event wakes the
// local WaitExport calls for its job. Events can be lost, so both paths
// re-read the store: runs at every chunk write and lease renewal, waiters
// every pollInterval.

// listen receives the store's events until the Exporter stops, and closes
// ready once subscribed the first time.
func (e *Exporter) listen(ready chan struct{}) {
	backoff := 50 * time.Millisecond
	for e.base.Err() == nil {
		sub, err := e.store.Subscribe(e.base)
		if err == nil {
			if ready != nil {
				close(ready)
				ready = nil
			}
			backoff = 50 * time.Millisecond
			for err == nil {
				var ev Event
				if ev, err = sub.Receive(e.base, 0); err == nil && ev.ID != "" {
					e.dispatch(ev)
				}
			}
			sub.Close()
		}
		if e.base.Err() != nil {
			break
		}
		e.log.Warn("export event subscription failed; retrying", "err", err, "backoff", backoff)
		select {
		case <-e.base.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	// Wake every waiter: from now on they subscribe for themselves.
	e.waitersMu.Lock()
	for _, chans := range e.waiters {
		for ch := range chans {
			notify(ch, Event{})
		}
	}
	e.waitersMu.Unlock()
}

// dispatch acts on one event.
func (e *Exporter) dispatch(ev Event) {
	if ev.Status == StatusCancelled {
		e.sched.abort(ev.ID, ErrCancelled)
	}
	if ev.Kind != "" && e.queue != nil {
		if _, ok := e.cfg.Sources[ev.Kind]; ok {
			e.wakeClaimer()
		}
	}
	e.waitersMu.Lock()
	for ch := range e.waiters[ev.ID] {
		notify(ch, ev)
	}
	e.waitersMu.Unlock()
}

// notify hands a waiter the event without blocking. A waiter that has
// not taken the previous one gets the newer instead: an end replaces
// progress, and either tells it to look.
func notify(ch chan Event, ev Event) {
	for {
		select {
		case ch <- ev:
			return
		default:
		}
		select {
		case old := <-ch:
			if old.Status.Terminal() && !ev.Status.Terminal() {
				ev = old // keep the end
			}
		default:
		}
	}
}

// addWaiter registers a waiter for job id on the Exporter's subscription and
// returns its wake-up channel and its release function, after waiting (up
// to poll) for the subscription to be in place. ok is false once the
// Exporter has stopped listening (after Shutdown).
func (e *Exporter) addWaiter(ctx context.Context, id string, poll time.Duration) (wake chan Event, release func(), ok bool) {
	ready, _ := e.startListening()
	if ready == nil {
		return nil, nil, false // stopped: the Exporter no longer listens
	}
	wake = make(chan Event, 1)
	e.waitersMu.Lock()
	if e.waiters[id] == nil {
		e.waiters[id] = make(map[chan Event]struct{})
	}
	e.waiters[id][wake] = struct{}{}
	e.waitersMu.Unlock()
	release = func() {
		e.waitersMu.Lock()
		delete(e.waiters[id], wake)
		if len(e.waiters[id]) == 0 {
			delete(e.waiters, id)
		}
		e.waitersMu.Unlock()
	}
	t := time.NewTimer(poll)
	defer t.Stop()
	select {
	case <-ready:
	case <-ctx.Done():
	case <-e.base.Done():
	case <-t.C: // not subscribed yet (the store may be down): re-reads cover it
	}
	return wake, release, true
}

// WaitExport blocks until job id is terminal (completed, failed or
// cancelled, including failed because its worker was lost) and returns it,
// or returns ctx's error. A failed or cancelled job is returned with a nil
// error: see Job.Err. It is driven by store events, with a slow re-read as
// a safety net for lost events and lapsed leases. Waiting costs no Redis
// connection of its own while the Exporter runs; after Shutdown each call
// subscribes for itself.
//
// Errors are those of GetExportStatus, from the first read. After it, a
// re-read that fails for a reason that may pass (a cut connection, a
// restarting or failing-over server) is tried again at the next interval,
// so an outage delays a waiter rather than failing it, as it delays the
// export itself: bound the wait with ctx.
func (e *Exporter) WaitExport(ctx context.Context, user User, id string) (*Job, error) {
	job, err := e.wait(ctx, user, id)
	if err != nil {
		return nil, fmt.Errorf("exporter: wait %s: %w", idText(id), err)
	}
	return job, nil
}

func (e *Exporter) wait(ctx context.Context, user User, id string) (*Job, error) {
	if !user.authenticated() {
		return nil, ErrUnauthenticated
	}
	if !validID(id) {
		return nil, ErrNotFound
	}
	// Register before the first read, so an end in between is not missed.
	poll := e.pollInterval()
	wake, release, ok := e.addWaiter(ctx, id, poll)
	if ok {
		defer release()
	}
	job, err := e.visible(ctx, user, id)
	if err != nil || job.Status.Terminal() {
		return job, err
	}
	if !ok {
		return e.waitSubscribed(ctx, id, poll)
	}
	t := time.NewTimer(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-e.base.Done():
			return e.waitSubscribed(ctx, id, poll)
		case ev := <-wake:
			if ev.Job != nil {
				return ev.Job, nil // the event carried the job: no read needed
			}
			if ev.ID != "" && !ev.Status.Terminal() {
				continue // progress: not what a waiter waits for
			}
		case <-t.C:
		}
		job, err = e.store.Get(ctx, id, "")
		switch {
		case err == nil && job.Status.Terminal():
			return job, nil
		case err != nil && !e.retryable(err): // gone (expired), or ctx's end
			return nil, err
		case err != nil:
			e.log.DebugContext(ctx, "re-reading a waited-for export failed; trying again", "job", id, "err", err)
		}
		t.Reset(poll)
	}
}

// waitSubscribed is wait on a subscription of its own, for an Exporter
// that has stopped listening. A subscription or a re-read that fails for a
// reason that may pass is tried again after poll.
func (e *Exporter) waitSubscribed(ctx context.Context, id string, poll time.Duration) (*Job, error) {
	var sub Subscription
	defer func() {
		if sub != nil {
			sub.Close()
		}
	}()
	for {
		job, err := e.store.Get(ctx, id, "")
		switch {
		case err == nil && job.Status.Terminal():
			return job, nil
		case err != nil && !e.retryable(err):
			return nil, err
		}
		if sub == nil {
			if sub, err = e.store.Subscribe(ctx); err != nil && !e.retryable(err) {
				return nil, err
			}
		}
		// Until our event or the next re-read, whichever comes first.
		ev, err := e.receiveFor(ctx, sub, id, poll)
		switch {
		case ev.Job != nil:
			return ev.Job, nil
		case err != nil && !e.retryable(err):
			return nil, err
		}
	}
}

// receiveFor waits up to d for an event of job id on sub (nil: none, wait
// d): it returns the event, or the zero Event when d passed, another
// event of id came without its job, or sub failed (then with its error;
// sub recovers at its next Receive).
func (e *Exporter) receiveFor(ctx context.Context, sub Subscription, id string, d time.Duration) (Event, error) {
	deadline := time.Now().Add(d)
	for sub != nil {
		left := time.Until(deadline)
		if left <= 0 { // Receive would take 0 for "no timeout"
			return Event{}, nil
		}
		ev, err := sub.Receive(ctx, left)
		if err != nil {
			if !e.retryable(err) {
				return Event{}, err
			}
			break // wait out the rest of d
		}
		if ev.ID == id {
			return ev, nil
		}
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return Event{}, ctx.Err()
	case <-t.C:
		return Event{}, nil
	}
}

// pollInterval is how often WaitExport re-reads a job without an event:
// often enough to see a lapsed lease about LeaseTTL after its worker died.
func (e *Exporter) pollInterval() time.Duration {
	return min(max(e.cfg.LeaseTTL/4, 25*time.Millisecond), 2*time.Second)
}
