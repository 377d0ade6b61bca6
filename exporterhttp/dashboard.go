package exporterhttp

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/exporterkit/exporter"
)

// The dashboard (Config.Dashboard) is an operator's view of every export
// and every instance: a page, its script and its style, embedded, and two
// JSON routes the script polls. Cancelling and downloading go through the
// export routes, which let an admin act on anyone's export.

//go:embed dashboard
var dashboardFiles embed.FS

// asset is an embedded file of the dashboard, served as it is.
type asset struct {
	name        string // under /dashboard/ for the script and style
	contentType string
	data        []byte
	etag        string // strong: the SHA-256 of data
}

func newAsset(name, contentType string) *asset {
	data, err := dashboardFiles.ReadFile("dashboard/" + name)
	if err != nil {
		// The files are embedded by the build: a missing one is a bug of
		// this package, which every test of the dashboard catches.
		panic("exporterhttp: embedded dashboard file missing: " + err.Error())
	}
	sum := sha256.Sum256(data)
	return &asset{name: name, contentType: contentType, data: data, etag: `"` + hex.EncodeToString(sum[:]) + `"`}
}

var (
	// dashboardHTML is the page, GET /dashboard.
	dashboardHTML = newAsset("index.html", "text/html; charset=utf-8")
	// dashboardAssets are what the page loads, GET /dashboard/<name>.
	dashboardAssets = []*asset{
		newAsset("dashboard.js", "text/javascript; charset=utf-8"),
		newAsset("dashboard.css", "text/css; charset=utf-8"),
	}
)

// dashboardCSP is the Content-Security-Policy of the page: it loads its
// own script and style and talks to its own origin, nothing else, and no
// other site may frame it.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// maxOwner bounds the owner a dashboard listing asks for.
const maxOwner = 256

// admin returns nil if user holds the Exporter's Config.AdminPermission,
// and else an error wrapping exporter.ErrForbidden (or
// exporter.ErrUnauthenticated).
func (h *Handler) admin(ctx context.Context, user exporter.User) error {
	return h.exp.CheckAdmin(ctx, user)
}

// dashboardPage is GET /dashboard: the page, for admins. Its errors are
// problem documents, or a small HTML page when the request accepts
// text/html, as a browser's navigation does.
func (h *Handler) dashboardPage(w http.ResponseWriter, r *http.Request) {
	user, err := h.authenticate(r)
	if err == nil {
		err = h.admin(r.Context(), user)
	}
	if err != nil {
		h.failPage(w, r, err)
		return
	}
	w.Header().Set("Content-Security-Policy", dashboardCSP)
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "same-origin")
	serveAsset(w, r, dashboardHTML)
}

// dashboardAsset returns the handler of GET /dashboard/<a.name>, for
// admins.
func (h *Handler) dashboardAsset(a *asset) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		user, ok := h.user(w, r)
		if !ok {
			return
		}
		if err := h.admin(r.Context(), user); err != nil {
			h.fail(w, r, err)
			return
		}
		serveAsset(w, r, a)
	}
}

// serveAsset serves a with http.ServeContent, which answers
// If-None-Match and HEAD. A client revalidates it at each use: it changes
// with the package's version.
func serveAsset(w http.ResponseWriter, r *http.Request, a *asset) {
	hdr := w.Header()
	hdr.Set("Content-Type", a.contentType)
	hdr.Set("ETag", a.etag)
	hdr.Set("Cache-Control", "private, no-cache")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.data))
}

// dashboardExports is GET /dashboard/exports?owner=&status=&cursor=&limit=:
// a page of every owner's exports (or owner's alone), newest first, of one
// status if asked, for admins; the body is GET /'s.
func (h *Handler) dashboardExports(w http.ResponseWriter, r *http.Request) {
	user, ok := h.user(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	opts, err := listOptions(q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	owner := q.Get("owner")
	switch {
	case len(owner) > maxOwner:
		h.fail(w, r, &apiError{status: http.StatusBadRequest, code: "invalid", title: "Invalid request",
			detail: fmt.Sprintf("owner must be at most %d bytes", maxOwner)})
		return
	case owner == "":
		opts.AllOwners = true
	case owner == user.ID:
		// ListExports lets anyone list their own exports, and the
		// dashboard is for admins only.
		if err := h.admin(r.Context(), user); err != nil {
			h.fail(w, r, err)
			return
		}
		opts.Owner = owner
	default:
		opts.Owner = owner // ListExports checks the admin permission
	}
	list, err := h.exp.ListExports(r.Context(), user, opts)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, exportList{Exports: list.Jobs, Next: list.Next})
}

// instanceList is the body of GET /dashboard/instances.
type instanceList struct {
	Instances []*exporter.Instance `json:"instances"`
	Totals    totals               `json:"totals"`
}

// totals sums the reports of the instances running now. The counts of
// runs cover each instance since it started: an instance that stopped
// takes its counts away.
type totals struct {
	Instances   int              `json:"instances"`
	Running     int              `json:"running"`
	Pending     int              `json:"pending"`
	MaxRunning  int              `json:"max_running"`
	Throughput  int64            `json:"throughput"` // bytes stored per second
	BytesStored int64            `json:"bytes_stored"`
	Began       int64            `json:"began"`
	Completed   int64            `json:"completed"`
	Failed      int64            `json:"failed"`
	Cancelled   int64            `json:"cancelled"`
	Failures    map[string]int64 `json:"failures"` // failed runs by Job.ErrorCode; {} when none
}

func sum(list []*exporter.Instance) totals {
	t := totals{Instances: len(list), Failures: map[string]int64{}}
	for _, in := range list {
		t.Running += in.Running
		t.Pending += in.Pending
		t.MaxRunning += in.MaxRunning
		t.Throughput += in.Throughput
		t.BytesStored += in.BytesStored
		t.Began += in.Began
		t.Completed += in.Completed
		t.Failed += in.Failed
		t.Cancelled += in.Cancelled
		for code, n := range in.Failures {
			t.Failures[code] += n
		}
	}
	return t
}

// dashboardInstances is GET /dashboard/instances: the report of every
// running Exporter that shares the store, and their totals, for admins.
func (h *Handler) dashboardInstances(w http.ResponseWriter, r *http.Request) {
	user, ok := h.user(w, r)
	if !ok {
		return
	}
	list, err := h.exp.Instances(r.Context(), user)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, instanceList{Instances: list, Totals: sum(list)})
}

// errorPage is the HTML form of a problem document, for a browser that
// opened the dashboard and may not see it.
var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>{{.Status}} {{.Title}}</title>
<h1>{{.Status}} {{.Title}}</h1>
<p>{{.Detail}}</p>
<p>Code: <code>{{.Code}}</code></p>
</html>
`))

// failPage answers err for the dashboard's page: as an HTML page when r
// accepts text/html, else as a problem document.
func (h *Handler) failPage(w http.ResponseWriter, r *http.Request, err error) {
	p := h.problem(r, err, nil)
	if !acceptsHTML(r) {
		writeProblem(w, p)
		return
	}
	var b bytes.Buffer
	if err := errorPage.Execute(&b, p); err != nil { // a problem always renders; this is a bug
		writeProblem(w, p)
		return
	}
	hdr := w.Header()
	if p.Status == http.StatusServiceUnavailable {
		hdr.Set("Retry-After", retryAfter)
	}
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	w.WriteHeader(p.Status)
	w.Write(b.Bytes())
}

// acceptsHTML reports whether r's Accept header names text/html with a
// quality above 0. "*/*" alone does not count: curl sends it, and gets the
// problem document.
func acceptsHTML(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			t, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil || t != "text/html" {
				continue
			}
			q, err := strconv.ParseFloat(cmp.Or(params["q"], "1"), 64)
			if err == nil && q > 0 {
				return true
			}
		}
	}
	return false
}
