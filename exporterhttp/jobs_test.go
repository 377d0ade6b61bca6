package exporterhttp_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/exporterkit/exporter"
	"github.com/stretchr/testify/require"
)

// TestList checks GET /: the caller's exports only, newest first, in pages
// that follow "next", and bad limits and cursors refused.
func TestList(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		var started []string
		for range 3 {
			started = append(started, e.startCSV(t, "alice", 1, "").ID)
		}
		e.startCSV(t, "bob", 1, "")

		type page struct {
			Exports []*exporter.Job `json:"exports"`
			Next    *string         `json:"next"`
		}
		get := func(query string) page {
			t.Helper()
			rep := e.request(t, http.MethodGet, "/"+query, "alice", "")
			require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
			require.Equal(t, "application/json", rep.header.Get("Content-Type"))
			var p page
			require.NoError(t, json.Unmarshal(rep.body, &p))
			return p
		}
		first := get("?limit=2")
		require.Len(t, first.Exports, 2)
		require.NotNil(t, first.Next)
		second := get("?limit=2&cursor=" + url.QueryEscape(*first.Next))
		require.Len(t, second.Exports, 1)
		require.Nil(t, second.Next, "no next after the last page")
		var ids []string
		for _, j := range append(first.Exports, second.Exports...) {
			require.Equal(t, "alice", j.Owner)
			ids = append(ids, j.ID)
		}
		require.ElementsMatch(t, started, ids)
		all := get("")
		require.Len(t, all.Exports, 3)
		require.True(t, slices.IsSortedFunc(all.Exports, func(a, b *exporter.Job) int {
			return b.CreatedAt.Compare(a.CreatedAt)
		}), "newest first")

		rep := e.request(t, http.MethodGet, "/", "carol", "")
		require.JSONEq(t, `{"exports":[]}`, string(rep.body), "an empty list is [], not null")

		for _, q := range []string{"?limit=0", "?limit=-1", "?limit=abc", "?limit=1001", "?cursor=bogus",
			"?cursor=" + strings.Repeat("9", 300), "?limit=" + strings.Repeat("9", 5000)} {
			p := requireProblem(t, e.request(t, http.MethodGet, "/"+q, "alice", ""), http.StatusBadRequest, "invalid")
			require.LessOrEqual(t, len(p.Detail), 256, p.Detail)
		}
	})
}

// TestStatus checks GET /{id}: the job as the Exporter has it, in its own
// JSON form.
func TestStatus(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		job := e.startCSV(t, "alice", 5, "five.csv")
		rep := e.request(t, http.MethodGet, "/"+job.ID, "alice", "")
		require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
		require.Equal(t, "no-store", rep.header.Get("Cache-Control"))
		want, err := json.Marshal(job)
		require.NoError(t, err)
		var got, wantMap map[string]any
		require.NoError(t, json.Unmarshal(rep.body, &got))
		require.NoError(t, json.Unmarshal(want, &wantMap))
		delete(got, "updated_at") // a read may renew it
		delete(wantMap, "updated_at")
		delete(got, "expires_at")
		delete(wantMap, "expires_at")
		require.Equal(t, wantMap, got)
	})
}

// TestCancel checks DELETE /{id}: a running export is cancelled (200, the
// job), cancelling again succeeds, a completed one is 409 "finished" with
// the export, and another user's is 404 and left running.
func TestCancel(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		job := e.start(t, "alice", "gate", "null")
		e.gate.feed(t, chunkSize)
		e.running(t, "alice", job.ID, chunkSize)

		requireProblem(t, e.request(t, http.MethodDelete, "/"+job.ID, "bob", ""), http.StatusNotFound, "not_found")
		require.Equal(t, exporter.StatusRunning, decodeJob(t, e.request(t, http.MethodGet, "/"+job.ID, "alice", "")).Status)

		for range 2 {
			rep := e.request(t, http.MethodDelete, "/"+job.ID, "alice", "")
			require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
			got := decodeJob(t, rep)
			require.Equal(t, exporter.StatusCancelled, got.Status)
			require.Equal(t, exporter.CodeCancelled, got.ErrorCode)
		}
		require.Equal(t, exporter.StatusCancelled, e.wait(t, "alice", job.ID).Status)

		done := e.startCSV(t, "alice", 1, "")
		p := requireProblem(t, e.request(t, http.MethodDelete, "/"+done.ID, "alice", ""), http.StatusConflict, "finished")
		var export exporter.Job
		require.NoError(t, json.Unmarshal(p.Export, &export))
		require.Equal(t, done.ID, export.ID)
		require.Equal(t, exporter.StatusCompleted, export.Status)
		require.Equal(t, exporter.StatusCompleted, e.wait(t, "alice", done.ID).Status, "a refused cancel changes nothing")
	})
}

// TestListStatus checks GET /?status=: the caller's exports in that
// status only, and a status that is not one refused.
func TestListStatus(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		done := e.startCSV(t, "alice", 1, "")
		run := e.start(t, "alice", "gate", "null")
		e.gate.feed(t, chunkSize)
		e.running(t, "alice", run.ID, chunkSize)
		e.start(t, "bob", "csv", `{"rows":1}`)

		get := func(query string) []string {
			t.Helper()
			rep := e.request(t, http.MethodGet, "/"+query, "alice", "")
			require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
			var p struct {
				Exports []*exporter.Job `json:"exports"`
			}
			require.NoError(t, json.Unmarshal(rep.body, &p))
			require.NotNil(t, p.Exports, "[], not null")
			var ids []string
			for _, j := range p.Exports {
				require.Equal(t, "alice", j.Owner)
				ids = append(ids, j.ID)
			}
			return ids
		}
		require.Equal(t, []string{run.ID, done.ID}, get("?status="))
		require.Equal(t, []string{run.ID}, get("?status=running"))
		require.Equal(t, []string{done.ID}, get("?status=completed&limit=1"))
		require.Empty(t, get("?status=failed"))
		require.Empty(t, get("?status=pending"))
		for _, q := range []string{"?status=bogus", "?status=Running", "?status=" + strings.Repeat("é", 3000)} {
			p := requireProblem(t, e.request(t, http.MethodGet, "/"+q, "alice", ""), http.StatusBadRequest, "invalid")
			require.Contains(t, p.Detail, "status")
			require.LessOrEqual(t, len(p.Detail), 256, p.Detail)
		}
	})
}
