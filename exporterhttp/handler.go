package exporterhttp

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/exporterkit/exporter"
)

// DefaultHeartbeat is Config.Heartbeat when 0.
const DefaultHeartbeat = 15 * time.Second

// Config configures a Handler. Its zero value is not usable: Exporter and
// Authenticate are required.
type Config struct {
	// Exporter runs and answers for the exports. Required.
	Exporter *exporter.Exporter
	// Authenticate returns the request's user, by the service's own means
	// (a session cookie, a bearer token...). An error wrapping
	// exporter.ErrUnauthenticated, or a User with an empty ID, is answered
	// 401; any other error 500, logged and not sent. Required; it is called
	// concurrently.
	Authenticate func(*http.Request) (exporter.User, error)
	// Kinds are the durable export kinds (Exporter.Enqueue) a POST may
	// start. A kind not listed is refused with code "unknown_kind", even if
	// the Exporter's Config.Sources has it. Empty means a POST starts
	// nothing: the handler then only serves exports the service started.
	Kinds []string
	// Logger receives a record for each refused or failed request (a 500
	// at Error, the rest at Debug). nil means slog.Default().
	Logger *slog.Logger
	// Heartbeat is the interval of the comment lines that keep an event
	// stream open through proxies. 0 means DefaultHeartbeat (15 s).
	Heartbeat time.Duration
	// Prepare, if set, is called for each POST of an allowed kind before
	// the export is enqueued: it checks the args (the Source sees them
	// only when an attempt runs, after the 201) and returns options for
	// Enqueue, such as exporter.WithTotal, so that clients see a
	// percentage. An error wrapping exporter.ErrInvalid is answered 400
	// "invalid" with the error's text (capped) as the detail, as is one
	// wrapping another sentinel of the exporter package its usual way;
	// any other error 500. It is called concurrently.
	Prepare func(r *http.Request, user exporter.User, kind string, args json.RawMessage) ([]exporter.StartOption, error)
	// Dashboard serves the operator's dashboard under /dashboard: a page
	// and its JSON, for holders of the Exporter's Config.AdminPermission
	// only (see the package documentation). false, the default, serves
	// nothing there: its paths answer 404 like any unknown one.
	Dashboard bool
}

// Handler is the HTTP API of an Exporter, mounted by the service under a
// prefix with http.StripPrefix (see the package documentation). Create one
// with New. It is safe for concurrent use.
type Handler struct {
	exp       *exporter.Exporter
	auth      func(*http.Request) (exporter.User, error)
	kinds     []string // sorted
	logger    *slog.Logger
	heartbeat time.Duration
	prepare   func(*http.Request, exporter.User, string, json.RawMessage) ([]exporter.StartOption, error)
	mux       *http.ServeMux
	routes    map[string]bool // the patterns of mux

	closeOnce sync.Once
	closed    chan struct{} // closed by CloseStreams
}

// New returns a Handler for cfg. It returns an error wrapping
// exporter.ErrInvalid, naming the field, for a Config it cannot use.
func New(cfg Config) (*Handler, error) {
	bad := func(format string, args ...any) (*Handler, error) {
		return nil, fmt.Errorf("exporterhttp: new: %w: Config."+format, append([]any{exporter.ErrInvalid}, args...)...)
	}
	switch {
	case cfg.Exporter == nil:
		return bad("Exporter is required")
	case cfg.Authenticate == nil:
		return bad("Authenticate is required")
	case cfg.Heartbeat < 0:
		return bad("Heartbeat must not be negative")
	case slices.Contains(cfg.Kinds, ""):
		return bad("Kinds must not hold an empty kind")
	}
	h := &Handler{
		exp:       cfg.Exporter,
		auth:      cfg.Authenticate,
		kinds:     slices.Compact(slices.Sorted(slices.Values(cfg.Kinds))),
		logger:    cfg.Logger,
		heartbeat: cfg.Heartbeat,
		prepare:   cfg.Prepare,
		mux:       http.NewServeMux(),
		routes:    make(map[string]bool),
		closed:    make(chan struct{}),
	}
	if h.heartbeat == 0 {
		h.heartbeat = DefaultHeartbeat
	}
	h.handle("POST /{$}", h.start)
	h.handle("GET /{$}", h.list)
	h.handle("GET /{id}", h.status)
	h.handle("DELETE /{id}", h.cancel)
	h.handle("GET /{id}/download", h.download)
	h.handle("GET /{id}/events", h.events)
	if cfg.Dashboard {
		h.handle("GET /dashboard", h.dashboardPage)
		for _, a := range dashboardAssets {
			h.handle("GET /dashboard/"+a.name, h.dashboardAsset(a))
		}
		h.handle("GET /dashboard/exports", h.dashboardExports)
		h.handle("GET /dashboard/instances", h.dashboardInstances)
	}
	return h, nil
}

func (h *Handler) handle(pattern string, f http.HandlerFunc) {
	h.mux.HandleFunc(pattern, f)
	h.routes[pattern] = true
}

func (h *Handler) log() *slog.Logger {
	if h.logger != nil {
		return h.logger
	}
	return slog.Default()
}

// CloseStreams ends every open event stream, and answers later requests
// for one with 503 "shutting_down". http.Server.Shutdown waits for running
// requests and an event stream runs until its export ends, so call it when
// the server shuts down: srv.RegisterOnShutdown(h.CloseStreams). Clients
// that reconnect (as a browser's EventSource does) resume where they were
// with Last-Event-ID, on another instance. It is idempotent.
func (h *Handler) CloseStreams() {
	h.closeOnce.Do(func() { close(h.closed) })
}

// errNoRoute answers a path under the mount that names nothing.
var errNoRoute = &apiError{status: http.StatusNotFound, code: "not_found", title: "Not found",
	detail: "no such resource"}

// ServeHTTP implements http.Handler. It expects the path relative to the
// mount: "/" for the collection, "/<id>..." for an export.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.URL.Path == "" { // mounted without a trailing slash: "/exports" itself
		r2 := *r
		u := *r.URL
		u.Path, u.RawPath = "/", ""
		r2.URL = &u
		r = &r2
	}
	if r.Method == http.MethodPost || r.Method == http.MethodDelete {
		if err := checkOrigin(r); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	// A ServeMux answers a path that is not clean with a redirect, whose
	// Location would lack the mount's prefix: a service's own ServeMux
	// has cleaned the path already, so such a path names nothing here.
	if p := r.URL.EscapedPath(); !isClean(p) {
		h.fail(w, r, errNoRoute)
		return
	}
	route, pattern := h.mux.Handler(r)
	if !h.routes[pattern] {
		h.unrouted(w, r, route)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// isClean reports whether p is its own path.Clean, but for a trailing
// slash.
func isClean(p string) bool {
	c := path.Clean(p)
	return p == c || (strings.HasSuffix(p, "/") && p == c+"/")
}

// unrouted answers a request that no route takes: 405 with Allow when the
// path has routes for other methods, else 404. route is the ServeMux's
// answer, which is plain text: only its status and Allow are kept.
func (h *Handler) unrouted(w http.ResponseWriter, r *http.Request, route http.Handler) {
	rec := &statusRecorder{header: make(http.Header)}
	route.ServeHTTP(rec, r)
	if rec.status != http.StatusMethodNotAllowed {
		h.fail(w, r, errNoRoute)
		return
	}
	allow := rec.header.Get("Allow")
	w.Header().Set("Allow", allow)
	h.fail(w, r, &apiError{status: http.StatusMethodNotAllowed, code: "method_not_allowed",
		title: "Method not allowed", detail: fmt.Sprintf("method %s is not allowed here; allowed: %s", echo(r.Method), allow)})
}

// statusRecorder is a ResponseWriter that keeps the status and headers and
// drops the body.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
func (s *statusRecorder) Write(p []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	return len(p), nil
}

// user authenticates r. It answers the request and returns false when
// there is no user.
func (h *Handler) user(w http.ResponseWriter, r *http.Request) (exporter.User, bool) {
	user, err := h.authenticate(r)
	if err != nil {
		h.fail(w, r, err)
		return exporter.User{}, false
	}
	return user, true
}

// authenticate returns the user of r, or an error wrapping
// exporter.ErrUnauthenticated when there is none, or the opaque error of
// Config.Authenticate.
func (h *Handler) authenticate(r *http.Request) (exporter.User, error) {
	user, err := h.auth(r)
	if err == nil && user.ID == "" {
		err = exporter.ErrUnauthenticated
	}
	if err != nil {
		if !errors.Is(err, exporter.ErrUnauthenticated) {
			// Opaque: an Authenticate failure that happens to wrap a
			// sentinel (ErrNotFound from a user lookup) is the 500 it is.
			err = fmt.Errorf("exporterhttp: authenticate: %w", opaque{err})
		}
		return exporter.User{}, err
	}
	return user, nil
}

// opaque is an error with its text and no chain.
type opaque struct{ err error }

func (o opaque) Error() string { return o.err.Error() }

// export begins every request about one export (/{id}...): it
// authenticates r, then reads the {id} of the path in canonical
// (lower-case) form. It answers the request and returns false when there
// is no user (401, before the id is looked at) or the id is not the form
// of an export id (404, as an unknown id is).
func (h *Handler) export(w http.ResponseWriter, r *http.Request) (exporter.User, string, bool) {
	user, ok := h.user(w, r)
	if !ok {
		return exporter.User{}, "", false
	}
	raw := r.PathValue("id")
	id := strings.ToLower(raw)
	if !exporter.ValidID(id) {
		h.fail(w, r, &apiError{status: http.StatusNotFound, code: "not_found", title: "Export not found",
			detail: "no export has the id " + echo(raw)})
		return exporter.User{}, "", false
	}
	return user, id, true
}
