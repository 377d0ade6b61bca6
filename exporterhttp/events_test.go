package exporterhttp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/exporterhttp"
	"github.com/stretchr/testify/require"
)

// sseEvent is one block of an event stream: its fields, and its comment
// lines without the colon.
type sseEvent struct {
	id, event, data string
	comments        []string
}

// sseStream reads an event stream.
type sseStream struct {
	resp *http.Response
	br   *bufio.Reader
}

// openEvents opens the event stream of export id as user with hdr, and
// requires it to be one. It is closed when the test ends.
func (e *env) openEvents(t *testing.T, user, id string, hdr ...string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	req := e.newRequest(t, http.MethodGet, "/"+id+"/events", user, "", hdr...)
	resp, err := e.srv.Client().Do(req.WithContext(ctx))
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
	})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	return &sseStream{resp: resp, br: bufio.NewReader(resp.Body)}
}

// next returns the next block, or io.EOF when the stream ended.
func (s *sseStream) next() (sseEvent, error) {
	var ev sseEvent
	seen := false
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			if err == io.EOF && (seen || line != "") {
				return ev, io.ErrUnexpectedEOF
			}
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if seen {
				return ev, nil
			}
			continue
		}
		seen = true
		if c, ok := strings.CutPrefix(line, ":"); ok {
			ev.comments = append(ev.comments, strings.TrimSpace(c))
			continue
		}
		name, value, _ := strings.Cut(line, ": ")
		switch name {
		case "id":
			ev.id = value
		case "event":
			ev.event = value
		case "data":
			ev.data = value
		}
	}
}

// nextEvent returns the next block that is an event, skipping comments.
func (s *sseStream) nextEvent(t *testing.T) (sseEvent, *exporter.Job) {
	t.Helper()
	for {
		ev, err := s.next()
		require.NoError(t, err)
		if ev.event == "" {
			continue
		}
		var job exporter.Job
		require.NoError(t, json.Unmarshal([]byte(ev.data), &job), ev.data)
		require.Equal(t, fmt.Sprintf("%d-%d-%s", job.Bytes, max(job.Read, job.Bytes), job.Status), ev.id, "the id names the state")
		want := "progress"
		if job.Status.Terminal() {
			want = "end"
		}
		require.Equal(t, want, ev.event)
		return ev, &job
	}
}

// requireEnded checks that the stream ends, with nothing but comments
// before its end.
func (s *sseStream) requireEnded(t *testing.T) {
	t.Helper()
	for {
		ev, err := s.next()
		if errors.Is(err, io.EOF) {
			return
		}
		require.NoError(t, err)
		require.Empty(t, ev.event, "no event after the end: %+v", ev)
	}
}

// rank orders statuses as they move.
func rank(s exporter.Status) int {
	switch {
	case s == exporter.StatusPending:
		return 0
	case s.Terminal():
		return 2
	}
	return 1
}

// later reports whether a is a later state than b.
func later(a, b *exporter.Job) bool {
	switch {
	case rank(a.Status) != rank(b.Status):
		return rank(a.Status) > rank(b.Status)
	case a.Bytes != b.Bytes:
		return a.Bytes > b.Bytes
	}
	return a.Read > b.Read
}

// TestEvents checks the event stream of an export from its start to its
// end: "progress" events as its bytes grow, each id later than the one
// before, then one "end" event with the completed job, then the end of the
// stream.
func TestEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		job := e.start(t, "alice", "gate", "null")
		s := e.openEvents(t, "alice", strings.ToUpper(job.ID))
		ev, prev := s.nextEvent(t)
		require.Equal(t, "progress", ev.event)
		require.Equal(t, job.ID, prev.ID)
		require.Zero(t, prev.Bytes)
		for i := int64(1); i <= 3; i++ {
			e.gate.feed(t, chunkSize)
			for prev.Bytes < i*chunkSize {
				_, got := s.nextEvent(t)
				require.True(t, later(got, prev), "%+v after %+v", got, prev)
				require.Equal(t, exporter.StatusRunning, got.Status)
				prev = got
			}
			require.Equal(t, i*chunkSize, prev.Bytes)
		}
		e.gate.finish(t)
		ev, end := s.nextEvent(t)
		require.Equal(t, "end", ev.event)
		require.Equal(t, "3072-3072-completed", ev.id)
		require.Equal(t, exporter.StatusCompleted, end.Status)
		require.NotEmpty(t, end.Checksum)
		s.requireEnded(t)

		// A finished export's stream is its end alone.
		s = e.openEvents(t, "alice", job.ID)
		ev, _ = s.nextEvent(t)
		require.Equal(t, "end", ev.event)
		s.requireEnded(t)
	})
}

// TestEventsResume checks Last-Event-ID: a client that reconnects is not
// sent the state it has, and one that has the end gets 204, which stops a
// browser's EventSource; an id the Handler did not make is ignored.
func TestEventsResume(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		job := e.start(t, "alice", "gate", "null")
		e.gate.feed(t, chunkSize)
		e.running(t, "alice", job.ID, chunkSize)
		s := e.openEvents(t, "alice", job.ID)
		ev, _ := s.nextEvent(t)
		require.Equal(t, "1024-1024-running", ev.id)
		s.resp.Body.Close()

		s = e.openEvents(t, "alice", job.ID, "Last-Event-ID", ev.id)
		// The stream opens with a comment once the Handler has the
		// export's state; that state, which the client has, is not sent.
		first, err := s.next()
		require.NoError(t, err)
		require.Empty(t, first.event)
		require.NotEmpty(t, first.comments)
		e.gate.feed(t, chunkSize)
		ev, got := s.nextEvent(t)
		require.NotEqual(t, "1024-1024-running", ev.id, "the state the client has is not sent again")
		require.Equal(t, exporter.StatusRunning, got.Status)
		require.Greater(t, got.Read, int64(chunkSize))
		for got.Bytes < 2*chunkSize {
			ev, got = s.nextEvent(t)
		}
		require.Equal(t, "2048-2048-running", ev.id)
		e.gate.finish(t)
		ev, _ = s.nextEvent(t)
		require.Equal(t, "2048-2048-completed", ev.id)
		s.requireEnded(t)

		rep := e.request(t, http.MethodGet, "/"+job.ID+"/events", "alice", "", "Last-Event-ID", ev.id)
		require.Equal(t, http.StatusNoContent, rep.status, "%s", rep.body)
		require.Empty(t, rep.body)

		for _, id := range []string{"garbage", "-1-1-running", "5-5-sleeping", "1024-1024-running"} {
			s = e.openEvents(t, "alice", job.ID, "Last-Event-ID", id)
			ev, _ = s.nextEvent(t)
			require.Equal(t, "2048-2048-completed", ev.id, "Last-Event-ID %q", id)
			s.requireEnded(t)
		}
	})
}

// TestEventsInsideAChunk checks that progress inside a chunk (Job.Read,
// which the Exporter records while a chunk fills) is sent, though Bytes
// and the status stay the same.
func TestEventsInsideAChunk(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		job := e.start(t, "alice", "gate", "null")
		e.running(t, "alice", job.ID, 0)
		s := e.openEvents(t, "alice", job.ID)
		ev, prev := s.nextEvent(t)
		require.Equal(t, "0-0-running", ev.id, "the next state differs in Read alone")
		e.gate.feed(t, 500)
		for prev.Read < 500 {
			_, got := s.nextEvent(t)
			require.True(t, later(got, prev), "%+v after %+v", got, prev)
			prev = got
		}
		require.Equal(t, exporter.StatusRunning, prev.Status)
		require.Zero(t, prev.Bytes, "a part of a chunk is read, not stored")
		e.gate.feed(t, chunkSize-500)
		for prev.Bytes < chunkSize {
			_, got := s.nextEvent(t)
			require.True(t, later(got, prev), "%+v after %+v", got, prev)
			prev = got
		}
		e.gate.finish(t)
		ev, _ = s.nextEvent(t)
		require.Equal(t, "1024-1024-completed", ev.id)
		s.requireEnded(t)
	})
}

// TestEventsHeartbeat checks that an idle stream carries a comment every
// Heartbeat.
func TestEventsHeartbeat(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "miniredis", func(c *exporterhttp.Config) { c.Heartbeat = 20 * time.Millisecond })
	job := e.start(t, "alice", "gate", "null")
	s := e.openEvents(t, "alice", job.ID)
	s.nextEvent(t)
	heartbeats := 0
	for heartbeats < 3 {
		ev, err := s.next()
		require.NoError(t, err)
		if slices.Contains(ev.comments, "heartbeat") {
			require.Empty(t, ev.event)
			heartbeats++
		}
	}
}

// TestEventsRefused checks that a stream that cannot start is a problem
// document, not a stream.
func TestEventsRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		job := e.start(t, "alice", "gate", "null")
		requireProblem(t, e.request(t, http.MethodGet, "/"+job.ID+"/events", "bob", ""), http.StatusNotFound, "not_found")
		requireProblem(t, e.request(t, http.MethodGet, "/0b5d4cde-6a3f-4c3e-9d2a-1f0e8b7c6a5d/events", "alice", ""), http.StatusNotFound, "not_found")
		requireProblem(t, e.request(t, http.MethodGet, "/"+job.ID+"/events", "", ""), http.StatusUnauthorized, "unauthenticated")
	})
}

// TestCloseStreams checks that CloseStreams ends the open streams and
// refuses new ones with 503 "shutting_down".
func TestCloseStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "miniredis", nil)
	job := e.start(t, "alice", "gate", "null")
	s := e.openEvents(t, "alice", job.ID)
	s.nextEvent(t)
	e.h.CloseStreams()
	s.requireEnded(t)
	rep := e.request(t, http.MethodGet, "/"+job.ID+"/events", "alice", "")
	requireProblem(t, rep, http.StatusServiceUnavailable, "shutting_down")
	require.Equal(t, "1", rep.header.Get("Retry-After"))
	rep = e.request(t, http.MethodGet, "/"+job.ID, "alice", "")
	require.Equal(t, http.StatusOK, rep.status, "the other routes still answer")
}
