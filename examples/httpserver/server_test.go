package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/examples/httpserver/internal/dataset"
)

// The routes and problem documents are exporterhttp's, and its tests
// cover them. These tests check what the service adds: that the Handler
// is mounted under apiPrefix with the service's kinds and login, the
// page, and the headers of every response.

// TestMount goes through the API as the service mounts it: an export of
// each kind started with a POST to the collection (with and without its
// trailing slash), listed, followed to its end on its event stream, and
// downloaded with the bytes the kind's source makes.
func TestMount(t *testing.T) {
	t.Parallel()
	in := newInstance(t, 0, exporter.Config{})
	const rows = 500

	// POST to the exact prefix is not redirected (a client could turn a
	// redirected POST into a GET).
	r := in.call(t, "POST", apiPrefix, "alice",
		fmt.Sprintf(`{"kind": %q, "args": {"rows": %d}, "filename": "orders.csv", "metadata": {"content-type": "text/csv"}}`, csvKind, rows))
	require.Equal(t, http.StatusCreated, r.status, "body %s", r.body)
	csv := r.job(t)
	require.Equal(t, apiPrefix+"/"+csv.ID, r.header.Get("Location"))
	require.Equal(t, csvKind, csv.Kind)
	require.Equal(t, "alice", csv.Owner)
	require.Equal(t, "orders.csv", csv.Metadata[exporter.MetadataFilename])
	require.Equal(t, dataset.Size(rows), csv.Total, "prepare sets the total, for a percentage")
	// Bad args are refused before anything is enqueued.
	p := in.call(t, "POST", apiPrefix+"/", "alice", fmt.Sprintf(`{"kind": %q, "args": {"rows": -3}}`, csvKind)).requireProblem(t, http.StatusBadRequest, "invalid")
	require.Contains(t, p.Detail, "rows must be from 1")
	// The shortest trickle, a slice and a half: it ends within a tick.
	trickle := in.start(t, "alice", fmt.Sprintf(`{"kind": %q, "args": {"rows": 20}}`, trickleKind))
	require.Equal(t, trickleKind, trickle.Kind)
	require.Less(t, dataset.Size(20), int64(2*trickleSlice), "the trickle of this test is at most two slices")

	for _, tt := range []struct {
		job  *exporter.Job
		rows int64
	}{{csv, rows}, {trickle, 20}} {
		// The event stream, through the mount, to its end.
		req, err := http.NewRequest("GET", in.ts.URL+apiPrefix+"/"+tt.job.ID+"/events", nil)
		require.NoError(t, err)
		req.Header.Set("X-User", "alice")
		resp, err := in.ts.Client().Do(req)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
		var end exporter.Job
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for event := ""; sc.Scan(); {
			line := sc.Text()
			if name, ok := strings.CutPrefix(line, "event: "); ok {
				event = name
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok && event == "end" {
				require.NoError(t, json.Unmarshal([]byte(data), &end))
			}
		}
		resp.Body.Close()
		require.Equal(t, exporter.StatusCompleted, end.Status, "the stream of %s kind %s ends with its end", tt.job.ID, tt.job.Kind)

		// The download is what the kind's source makes.
		d := in.call(t, "GET", apiPrefix+"/"+tt.job.ID+"/download", "alice", "")
		require.Equal(t, http.StatusOK, d.status, "body %s", d.body)
		require.Equal(t, dataset.Bytes(tt.rows), d.body, "the download of kind %s", tt.job.Kind)
		require.Equal(t, end.Bytes, int64(len(d.body)))
	}
	d := in.call(t, "GET", apiPrefix+"/"+csv.ID+"/download", "alice", "")
	require.Equal(t, "text/csv", d.header.Get("Content-Type"))
	require.Contains(t, d.header.Get("Content-Disposition"), `filename="orders.csv"`)

	// The list, newest first, with and without the trailing slash.
	for _, path := range []string{apiPrefix + "/", apiPrefix} {
		r = in.call(t, "GET", path+"?limit=1", "alice", "")
		require.Equal(t, http.StatusOK, r.status, "GET %s: %s", path, r.body)
		var list struct {
			Exports []exporter.Job `json:"exports"`
			Next    string         `json:"next"`
		}
		require.NoError(t, json.Unmarshal(r.body, &list))
		require.Len(t, list.Exports, 1)
		require.Equal(t, trickle.ID, list.Exports[0].ID)
		require.NotEmpty(t, list.Next)
	}

	// Everything under the prefix is the API's, answered with its problem
	// documents; the kinds are the service's.
	in.call(t, "GET", apiPrefix+"/"+csv.ID+"/nothing", "alice", "").requireProblem(t, http.StatusNotFound, "not_found")
	p = in.call(t, "POST", apiPrefix+"/", "alice", `{"kind": "pdf"}`).requireProblem(t, http.StatusBadRequest, "unknown_kind")
	for _, k := range kinds {
		require.Contains(t, p.Detail, fmt.Sprintf("%q", k.name))
	}
	// Outside the prefix, the service's mux answers.
	r = in.call(t, "GET", "/nothing", "alice", "")
	require.Equal(t, http.StatusNotFound, r.status)

	// The operator's dashboard is on, for the admin only, and lists
	// everyone's exports.
	r = in.call(t, "GET", dashboardPath, "admin", "")
	require.Equal(t, http.StatusOK, r.status, "body %s", r.body)
	require.Contains(t, r.header.Get("Content-Type"), "text/html")
	in.call(t, "GET", dashboardPath, "alice", "").requireProblem(t, http.StatusForbidden, "forbidden")
	r = in.call(t, "GET", dashboardPath+"/exports", "admin", "")
	require.Equal(t, http.StatusOK, r.status, "body %s", r.body)
	require.Contains(t, string(r.body), csv.ID)
}

// TestAuthenticate checks the demo login as the API sees it
// (exporterhttp.Config.Authenticate): no user or a malformed one is 401,
// guest may not start, a user's exports are hers, and the admin's
// permission (exporter.Config.AdminPermission) reaches everyone's.
func TestAuthenticate(t *testing.T) {
	t.Parallel()
	in := newInstance(t, 0, exporter.Config{})
	job := in.start(t, "alice", fmt.Sprintf(`{"kind": %q, "args": {"rows": 1000000, "rows_per_second": 1000}}`, csvKind))
	start := fmt.Sprintf(`{"kind": %q, "args": {"rows": 5}}`, csvKind)

	in.call(t, "GET", apiPrefix+"/", "", "").requireProblem(t, http.StatusUnauthorized, "unauthenticated")
	in.call(t, "GET", apiPrefix+"/", "Alice!", "").requireProblem(t, http.StatusUnauthorized, "unauthenticated")
	in.call(t, "POST", apiPrefix+"/", "", start).requireProblem(t, http.StatusUnauthorized, "unauthenticated")
	in.call(t, "POST", apiPrefix+"/", "guest", start).requireProblem(t, http.StatusForbidden, "forbidden")
	r := in.call(t, "GET", apiPrefix+"/", "guest", "")
	require.Equal(t, http.StatusOK, r.status, "guest may list its (empty) exports: %s", r.body)
	require.JSONEq(t, `{"exports": []}`, string(r.body))

	// Another user's export does not exist for bob; the admin sees it,
	// and may cancel it.
	in.call(t, "GET", apiPrefix+"/"+job.ID, "bob", "").requireProblem(t, http.StatusNotFound, "not_found")
	in.call(t, "DELETE", apiPrefix+"/"+job.ID, "bob", "").requireProblem(t, http.StatusNotFound, "not_found")
	require.Equal(t, "alice", in.get(t, "admin", job.ID).Owner)
	r = in.call(t, "DELETE", apiPrefix+"/"+job.ID, "admin", "")
	require.Equal(t, http.StatusOK, r.status, "body %s", r.body)
	require.Equal(t, exporter.StatusCancelled, r.job(t).Status)
	// The admin's own list is its own: the page shows no one else's.
	r = in.call(t, "GET", apiPrefix+"/", "admin", "")
	require.JSONEq(t, `{"exports": []}`, string(r.body))
}

// TestPage checks the page: rendered with the API's prefix, the
// heartbeat of its streams and the service's kinds; its script and style;
// its template not served raw; nothing loaded from elsewhere; and the
// headers of every response.
func TestPage(t *testing.T) {
	t.Parallel()
	in := newInstance(t, 2*time.Second, exporter.Config{})

	r := in.call(t, "GET", "/", "", "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "text/html; charset=utf-8", r.header.Get("Content-Type"))
	page := string(r.body)
	require.Contains(t, page, "<title>exporter demo</title>")
	require.Contains(t, page, `<body data-api="/exports" data-heartbeat-ms="2000">`)
	require.Contains(t, page, `<option value="csv" data-rate>CSV at a chosen rate</option>`)
	require.Contains(t, page, `<option value="csv-trickle">CSV trickling at 20 KiB/s</option>`)
	require.Equal(t, len(kinds), strings.Count(page, "<option "))
	// The admin's link to the operator's dashboard, hidden until the
	// script knows the user is an admin.
	require.Regexp(t, `<p id="admin-tools" class="hint" hidden>\s*<a id="dashboard-link" href="/exports/dashboard">`, page)
	require.NotContains(t, page, "{{", "the template is rendered")
	for _, element := range []string{
		`<form id="login-form"`, `<input id="login-user"`, `<button id="login-button" type="submit"`,
		`id="whoami"`, `<form id="start-form"`, `<select id="kind">`, `<input id="rows" type="number"`,
		`<input id="rate" type="number"`, `<input id="filename"`, `<button id="start-button" type="submit"`,
		`<ul id="exports">`, `<div id="error"`,
	} {
		require.Contains(t, page, element)
	}

	for _, tt := range []struct{ path, contentType string }{
		{"/static/app.js", "text/javascript; charset=utf-8"},
		{"/static/style.css", "text/css; charset=utf-8"},
	} {
		r := in.call(t, "GET", tt.path, "", "")
		require.Equal(t, http.StatusOK, r.status, tt.path)
		require.Equal(t, tt.contentType, r.header.Get("Content-Type"), tt.path)
		want, err := staticFiles.ReadFile(strings.TrimPrefix(tt.path, "/"))
		require.NoError(t, err)
		require.Equal(t, want, r.body, tt.path)
	}
	for _, path := range []string{"/static/index.html", "/static/", "/static/missing.js"} {
		require.Equal(t, http.StatusNotFound, in.call(t, "GET", path, "", "").status, path)
	}

	// Every response has the service's headers, the API's too.
	for _, path := range []string{"/", "/static/app.js", apiPrefix + "/", "/me"} {
		r := in.call(t, "GET", path, "alice", "")
		require.Equal(t, "nosniff", r.header.Get("X-Content-Type-Options"), path)
		require.Equal(t, "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'", r.header.Get("Content-Security-Policy"), path)
		require.Equal(t, "same-origin", r.header.Get("Referrer-Policy"), path)
	}

	// No file refers to another site.
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	require.NoError(t, fs.WalkDir(staticFiles, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := staticFiles.ReadFile(path)
		require.NoError(t, err)
		require.Empty(t, external.FindAllString(string(data), -1), "%s refers to another site", path)
		return nil
	}))
}
