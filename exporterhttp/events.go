package exporterhttp

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/exporterkit/exporter"
)

// An event stream sends each snapshot of Exporter.WatchExport as one
// Server-Sent Event:
//
//	id: 131040-140000-running
//	event: progress
//	data: {"id":"…","status":"running","bytes":131040,"read":140000,…}
//
// with "event: end" for the terminal snapshot, after which the stream
// ends. The id is "<bytes>-<read>-<status>" (Job.Bytes, Job.Read): each
// only grows (statuses move forward, Bytes and Read never decrease), and a
// snapshot differs from the one before in at least one, so ids are
// ordered. A client that reconnects with Last-Event-ID gets no state it
// already has: the stream waits for the next one, and a client that
// already has the end gets 204 No Content, which tells a browser's
// EventSource to stop reconnecting.

// snapshot is one item of WatchExport.
type snapshot struct {
	job *exporter.Job
	err error
}

// state is the position of a snapshot, as its event id says it.
type state struct {
	rank        int // 0 pending, 1 running, 2 terminal
	bytes, read int64
}

func rank(s exporter.Status) int {
	switch {
	case s == exporter.StatusPending:
		return 0
	case s.Terminal():
		return 2
	}
	return 1
}

func stateOf(job *exporter.Job) state {
	return state{rank(job.Status), job.Bytes, max(job.Read, job.Bytes)}
}

// after reports whether s is a later state than t.
func (s state) after(t state) bool {
	if s.rank != t.rank {
		return s.rank > t.rank
	}
	if s.bytes != t.bytes {
		return s.bytes > t.bytes
	}
	return s.read > t.read
}

func eventID(job *exporter.Job) string {
	s := stateOf(job)
	return strconv.FormatInt(s.bytes, 10) + "-" + strconv.FormatInt(s.read, 10) + "-" + string(job.Status)
}

// parseEventID reads a Last-Event-ID that eventID made.
func parseEventID(id string) (state, bool) {
	parts := strings.Split(id, "-")
	if len(parts) != 3 {
		return state{}, false
	}
	bytes, err1 := strconv.ParseInt(parts[0], 10, 64)
	read, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil || bytes < 0 || read < bytes {
		return state{}, false
	}
	switch s := exporter.Status(parts[2]); s {
	case exporter.StatusPending, exporter.StatusRunning, exporter.StatusCompleted, exporter.StatusFailed, exporter.StatusCancelled:
		return state{rank(s), bytes, read}, true
	}
	return state{}, false
}

// events is GET /{id}/events: the export's progress as Server-Sent Events,
// until its end, the client's departure, or CloseStreams.
func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	user, id, ok := h.export(w, r)
	if !ok {
		return
	}
	select {
	case <-h.closed:
		h.fail(w, r, exporter.ErrClosed)
		return
	default:
	}
	last, resumed := parseEventID(r.Header.Get("Last-Event-ID"))

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	snapshots := make(chan snapshot)
	go func() { // owned: drained below before the handler returns
		defer close(snapshots)
		for job, err := range h.exp.WatchExport(ctx, user, id) {
			select {
			case snapshots <- snapshot{job, err}:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		cancel()
		for range snapshots {
		}
	}()

	// The first snapshot is the export as it is, or why it cannot be
	// watched, answered as a problem while the status can still be set.
	var first snapshot
	select {
	case <-ctx.Done():
		return
	case <-h.closed:
		h.fail(w, r, exporter.ErrClosed)
		return
	case s, ok := <-snapshots:
		if !ok {
			return
		}
		first = s
	}
	if first.err != nil {
		h.fail(w, r, first.err)
		return
	}
	if resumed && first.job.Status.Terminal() && !stateOf(first.job).after(last) {
		w.WriteHeader(http.StatusNoContent)
		return
	}

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // a server's WriteTimeout would cut the stream
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	send := func(s string) bool {
		if _, err := w.Write([]byte(s)); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// emit sends s unless the client has it, and reports whether the
	// stream goes on.
	emit := func(s snapshot) bool {
		if s.err != nil {
			if ctx.Err() == nil {
				p := problemFor(s.err, nil)
				level := slog.LevelDebug
				if p.Status == http.StatusInternalServerError {
					level = slog.LevelError
				}
				h.log().Log(r.Context(), level, "exporterhttp: event stream failed", "job", id, "err", s.err)
				data, _ := json.Marshal(p)
				send("event: error\ndata: " + string(data) + "\n\n")
			}
			return false
		}
		terminal := s.job.Status.Terminal()
		if resumed && !stateOf(s.job).after(last) {
			return !terminal
		}
		data, err := json.Marshal(s.job)
		if err != nil {
			h.log().ErrorContext(r.Context(), "exporterhttp: encoding a job", "job", id, "err", err)
			return false
		}
		event := "progress"
		if terminal {
			event = "end"
		}
		last, resumed = stateOf(s.job), true
		return send("id: "+eventID(s.job)+"\nevent: "+event+"\ndata: "+string(data)+"\n\n") && !terminal
	}
	if !send(": watching export "+id+"\n\n") || !emit(first) {
		return
	}
	heartbeat := time.NewTicker(h.heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.closed:
			return
		case <-heartbeat.C:
			if !send(": heartbeat\n\n") {
				return
			}
		case s, ok := <-snapshots:
			if !ok || !emit(s) {
				return
			}
		}
	}
}
