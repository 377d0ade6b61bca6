package exporterhttp_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/exporterhttp"
	"github.com/stretchr/testify/require"
)

func TestNew(t *testing.T) {
	t.Parallel()
	exp := newEnv(t, "miniredis", nil).exp
	tests := []struct {
		name  string
		cfg   exporterhttp.Config
		field string // "" if valid
	}{
		{"no exporter", exporterhttp.Config{Authenticate: authenticate}, "Config.Exporter"},
		{"no authenticate", exporterhttp.Config{Exporter: exp}, "Config.Authenticate"},
		{"negative heartbeat", exporterhttp.Config{Exporter: exp, Authenticate: authenticate, Heartbeat: -1}, "Config.Heartbeat"},
		{"empty kind", exporterhttp.Config{Exporter: exp, Authenticate: authenticate, Kinds: []string{"csv", ""}}, "Config.Kinds"},
		{"minimal", exporterhttp.Config{Exporter: exp, Authenticate: authenticate}, ""},
		{"full", exporterhttp.Config{Exporter: exp, Authenticate: authenticate, Kinds: []string{"csv", "csv"}, Heartbeat: 1}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := exporterhttp.New(tt.cfg)
			if tt.field == "" {
				require.NoError(t, err)
				require.NotNil(t, h)
				return
			}
			require.ErrorIs(t, err, exporter.ErrInvalid)
			require.Nil(t, h)
			require.Contains(t, err.Error(), tt.field)
			require.True(t, strings.HasPrefix(err.Error(), "exporterhttp: new: "), err.Error())
		})
	}
}

// TestUnrouted checks that what no route takes is a problem document, 404
// or 405 with Allow, never the ServeMux's plain text.
func TestUnrouted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "miniredis", nil)
	const id = "0b5d4cde-6a3f-4c3e-9d2a-1f0e8b7c6a5d"
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/a/b/c", http.StatusNotFound, ""},
		{http.MethodGet, "/" + id + "/other", http.StatusNotFound, ""},
		{http.MethodGet, "/" + id + "/", http.StatusNotFound, ""},
		{http.MethodGet, "/" + id + "/download/", http.StatusNotFound, ""},
		{http.MethodPut, "/" + id, http.StatusMethodNotAllowed, "DELETE, GET, HEAD"},
		{http.MethodPost, "/" + id, http.StatusMethodNotAllowed, "DELETE, GET, HEAD"},
		{http.MethodPost, "/" + id + "/download", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodDelete, "/" + id + "/events", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodPatch, "/", http.StatusMethodNotAllowed, "GET, HEAD, POST"},
		{http.MethodDelete, "/", http.StatusMethodNotAllowed, "GET, HEAD, POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rep := e.request(t, tt.method, tt.path, "alice", "")
			code := "not_found"
			if tt.status == http.StatusMethodNotAllowed {
				code = "method_not_allowed"
			}
			requireProblem(t, rep, tt.status, code)
			require.Equal(t, tt.allow, rep.header.Get("Allow"))
			require.Equal(t, "nosniff", rep.header.Get("X-Content-Type-Options"))
		})
	}
}

// routes are one request of each route, for the tests that every route
// must pass alike. {id} is replaced by an export's id.
var routes = []struct{ method, path, body string }{
	{http.MethodPost, "/", `{"kind":"csv","args":{"rows":1}}`},
	{http.MethodGet, "/", ""},
	{http.MethodGet, "/{id}", ""},
	{http.MethodDelete, "/{id}", ""},
	{http.MethodGet, "/{id}/download", ""},
	{http.MethodGet, "/{id}/events", ""},
}

// TestAuthentication checks every route against a request without a user
// (401), and against an Authenticate that fails (500, its error logged
// and not sent).
func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "miniredis", nil)
	job := e.startCSV(t, "alice", 3, "")
	for _, rt := range routes {
		path := strings.ReplaceAll(rt.path, "{id}", job.ID)
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			requireProblem(t, e.request(t, rt.method, path, "", rt.body), http.StatusUnauthorized, "unauthenticated")
			requireProblem(t, e.request(t, rt.method, path, "nobody", rt.body), http.StatusUnauthorized, "unauthenticated")
			p := requireProblem(t, e.request(t, rt.method, path, "broken", rt.body), http.StatusInternalServerError, "internal")
			require.NotContains(t, p.Detail, "hunter2")
			require.NotContains(t, p.Detail, "session")
			requireProblem(t, e.request(t, rt.method, path, "lookup", rt.body), http.StatusInternalServerError, "internal")
		})
	}
	// Authentication comes first: a request without a user learns
	// nothing of its body or id.
	for _, user := range []string{"", "nobody"} {
		requireProblem(t, e.request(t, http.MethodPost, "/", user, `{"kind":`), http.StatusUnauthorized, "unauthenticated")
		requireProblem(t, e.request(t, http.MethodPost, "/", user, `{"kind":"pdf"}`), http.StatusUnauthorized, "unauthenticated")
		requireProblem(t, e.request(t, http.MethodGet, "/not-an-id", user, ""), http.StatusUnauthorized, "unauthenticated")
		requireProblem(t, e.request(t, http.MethodGet, "/?limit=-1", user, ""), http.StatusUnauthorized, "unauthenticated")
	}
	require.Contains(t, e.logs.String(), "hunter2", "the failure is in the log")
	require.Contains(t, e.logs.String(), `"level":"ERROR"`)
	// Nothing was started or cancelled on the way.
	require.Equal(t, []string{job.ID}, e.listIDs(t, "alice"))
	require.Equal(t, exporter.StatusCompleted, e.wait(t, "alice", job.ID).Status)
}

// TestForbidden checks that a user without the Exporter's permission
// cannot start an export.
func TestForbidden(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		rep := e.request(t, http.MethodPost, "/", "guest", `{"kind":"csv","args":{"rows":1}}`)
		requireProblem(t, rep, http.StatusForbidden, "forbidden")
		require.Empty(t, e.listIDs(t, "guest"))
	})
}

// TestIDs checks that ids are matched case-insensitively, and that a
// malformed, unknown or another user's id is 404 with at most a bounded
// echo of the id.
func TestIDs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		job := e.startCSV(t, "alice", 2, "")
		upper := strings.ToUpper(job.ID)
		got := decodeJob(t, e.request(t, http.MethodGet, "/"+upper, "alice", ""))
		require.Equal(t, job.ID, got.ID)
		rep := e.request(t, http.MethodGet, "/"+upper+"/download", "alice", "")
		require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
		require.Equal(t, csvData(2), rep.body)

		long := strings.Repeat("a", 5000)
		for _, id := range []string{"nope", job.ID + "0", long, "0b5d4cde-6a3f-4c3e-9d2a-1f0e8b7c6a5d"} {
			for _, rt := range routes[2:] {
				path := strings.ReplaceAll(rt.path, "{id}", id)
				p := requireProblem(t, e.request(t, rt.method, path, "alice", ""), http.StatusNotFound, "not_found")
				require.Less(t, len(p.Detail), 200, p.Detail)
			}
		}
		p := requireProblem(t, e.request(t, http.MethodGet, "/"+long, "alice", ""), http.StatusNotFound, "not_found")
		require.Contains(t, p.Detail, `"aaaa`, "the id is quoted")
		// Another user's export does not exist for bob, on any route.
		for _, rt := range routes[2:] {
			path := strings.ReplaceAll(rt.path, "{id}", job.ID)
			requireProblem(t, e.request(t, rt.method, path, "bob", ""), http.StatusNotFound, "not_found")
		}
		require.Equal(t, exporter.StatusCompleted, decodeJob(t, e.request(t, http.MethodGet, "/"+job.ID, "alice", "")).Status)
	})
}

// TestCrossOrigin checks that a POST or DELETE that a browser sends from
// another site is refused before it does anything, and that same-origin
// writes and cross-origin reads are not.
func TestCrossOrigin(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		host := strings.TrimPrefix(e.srv.URL, "http://")
		refused := [][]string{
			{"Origin", "https://evil.example"},
			{"Origin", "http://" + host + ".evil.example"},
			{"Origin", "null"},
			{"Origin", "http://" + host, "Sec-Fetch-Site", "cross-site"},
			{"Sec-Fetch-Site", "cross-site"},
		}
		allowed := [][]string{
			nil,
			{"Origin", "http://" + host},
			{"Origin", "https://" + strings.ToUpper(host)}, // the scheme is not compared
			{"Origin", "http://" + host, "Sec-Fetch-Site", "same-origin"},
			{"Sec-Fetch-Site", "same-site"},
		}
		body := `{"kind":"csv","args":{"rows":1}}`
		for _, hdr := range refused {
			requireProblem(t, e.request(t, http.MethodPost, "/", "alice", body, hdr...), http.StatusForbidden, "cross_origin")
		}
		require.Empty(t, e.listIDs(t, "alice"), "a refused POST starts nothing")
		for _, hdr := range allowed {
			rep := e.request(t, http.MethodPost, "/", "alice", body, hdr...)
			require.Equal(t, http.StatusCreated, rep.status, "%v: %s", hdr, rep.body)
		}
		require.Len(t, e.listIDs(t, "alice"), len(allowed))

		job := e.start(t, "alice", "gate", "null")
		for _, hdr := range refused {
			requireProblem(t, e.request(t, http.MethodDelete, "/"+job.ID, "alice", "", hdr...), http.StatusForbidden, "cross_origin")
		}
		rep := e.request(t, http.MethodGet, "/"+job.ID, "alice", "", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
		require.Equal(t, http.StatusOK, rep.status, "reads are not refused")
		require.False(t, decodeJob(t, rep).Status.Terminal(), "a refused DELETE cancels nothing")
		rep = e.request(t, http.MethodDelete, "/"+job.ID, "alice", "", "Origin", "http://"+host)
		require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
		require.Equal(t, exporter.StatusCancelled, decodeJob(t, rep).Status)
	})
}
