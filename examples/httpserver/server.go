package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/exporterkit/exporter"
)

// The service's limits and defaults.
const (
	defaultRows     = 1000
	maxRows         = 10_000_000
	maxRate         = 10_000_000 // rows per second
	defaultFilename = "export.csv"
	maxFilename     = 128 // bytes

	userCookie      = "exporter_user"
	adminPermission = "exporter:admin"

	maxLoginBody = 4 << 10
	maxStartBody = 64 << 10

	defaultPingEvery = 15 * time.Second
)

//go:embed static
var staticFiles embed.FS

// server is the HTTP API and page of the demo on one Exporter. Create it
// with newServer; it is an http.Handler. Call closeStreams when the HTTP
// server shuts down: event streams never end by themselves.
type server struct {
	exp *exporter.Exporter
	log *slog.Logger
	mux *http.ServeMux
	// csrf refuses state-changing requests that a browser sends from
	// another origin: the demo login is a cookie, which a page of another
	// origin on the same site (another port, a sibling subdomain) could
	// otherwise use to start, cancel, log in or out.
	csrf *http.CrossOriginProtection

	// watchEvery is the least time between two progress events of one
	// stream (exporter.WatchEvery); pingEvery is how often a stream sends
	// a comment so that proxies and browsers keep it open.
	watchEvery time.Duration
	pingEvery  time.Duration

	// streams is done once closeStreams was called: every event stream
	// ends, and new ones end at once.
	streams      context.Context
	closeStreams context.CancelFunc
}

func newServer(exp *exporter.Exporter, logger *slog.Logger) *server {
	streams, closeStreams := context.WithCancel(context.Background())
	s := &server{
		exp:          exp,
		log:          logger,
		mux:          http.NewServeMux(),
		csrf:         http.NewCrossOriginProtection(),
		watchEvery:   exporter.DefaultWatchInterval,
		pingEvery:    defaultPingEvery,
		streams:      streams,
		closeStreams: closeStreams,
	}
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	s.mux.HandleFunc("GET /{$}", s.index)
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", noCache(http.FileServerFS(static))))
	s.mux.HandleFunc("POST /login", s.login)
	s.mux.HandleFunc("POST /logout", s.logout)
	s.mux.HandleFunc("GET /me", s.me)
	s.mux.HandleFunc("GET /exports", s.list)
	s.mux.HandleFunc("POST /exports", s.start)
	s.mux.HandleFunc("GET /exports/{id}", s.status)
	s.mux.HandleFunc("DELETE /exports/{id}", s.cancel)
	s.mux.HandleFunc("GET /exports/{id}/download", s.download)
	s.mux.HandleFunc("GET /exports/{id}/events", s.events)
	return s
}

// ServeHTTP implements http.Handler: it sets the headers every response
// has, and logs each request once it is answered.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "same-origin")
	rec := &statusRecorder{ResponseWriter: w}
	if err := s.csrf.Check(r); err != nil {
		s.fail(rec, r, fmt.Errorf("%w: %w", errCrossOrigin, err))
	} else {
		s.mux.ServeHTTP(rec, r)
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", status), slog.Duration("took", time.Since(start)))
}

// statusRecorder remembers the status code of a response. Unwrap lets
// http.ResponseController reach the connection's Flush.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func noCache(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

func (s *server) index(w http.ResponseWriter, r *http.Request) {
	page, err := staticFiles.ReadFile("static/index.html")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(page)
}

// Users. This is a demo: whoever names a user is that user. A real service
// authenticates the request (a session, a token) and builds the
// exporter.User from what it trusts.

var validUserID = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)

// demoUser returns the user id is, with the demo's permissions: "guest"
// has none, "admin" may also see, cancel and download everyone's exports,
// everyone else may export.
func demoUser(id string) exporter.User {
	switch id {
	case "guest":
		return exporter.User{ID: id}
	case "admin":
		return exporter.User{ID: id, Permissions: []string{exporter.DefaultPermission, adminPermission}}
	default:
		return exporter.User{ID: id, Permissions: []string{exporter.DefaultPermission}}
	}
}

// errBadRequest marks a request the service refuses before it calls the
// Exporter: 400 with code "invalid", like exporter.ErrInvalid.
var errBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// user returns the acting user: the X-User header, else the login cookie.
// No user is the zero User, which every Exporter call refuses with
// ErrUnauthenticated; a malformed one is refused here the same way.
func (s *server) user(r *http.Request) (exporter.User, error) {
	id := r.Header.Get("X-User")
	if id == "" {
		if c, err := r.Cookie(userCookie); err == nil {
			id = c.Value
		}
	}
	if id == "" {
		return exporter.User{}, nil
	}
	if !validUserID.MatchString(id) {
		return exporter.User{}, fmt.Errorf("%w: user ids are 1 to 32 of a-z, 0-9, _ and -", exporter.ErrUnauthenticated)
	}
	return demoUser(id), nil
}

// login sets the login cookie for the user in a JSON body {"user": id} or
// a form field "user". A form post is redirected to the page.
func (s *server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	var id string
	form := false
	switch mediaType(r) {
	case "application/json":
		var body struct {
			User string `json:"user"`
		}
		if err := decodeJSON(r.Body, &body); err != nil {
			s.fail(w, r, err)
			return
		}
		id = body.User
	case "application/x-www-form-urlencoded", "multipart/form-data":
		if err := r.ParseMultipartForm(maxLoginBody); err != nil && !errors.Is(err, http.ErrNotMultipart) {
			s.fail(w, r, badRequest("reading the form: %v", err))
			return
		}
		id, form = r.PostFormValue("user"), true
	default:
		s.fail(w, r, errUnsupportedMediaType)
		return
	}
	if !validUserID.MatchString(id) {
		s.fail(w, r, badRequest("user must be 1 to 32 of a-z, 0-9, _ and -"))
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: userCookie, Value: id, Path: "/", MaxAge: 7 * 24 * 3600,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil,
	})
	s.log.InfoContext(r.Context(), "login", "user", id)
	if form {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: userCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil,
	})
	if t := mediaType(r); t == "application/x-www-form-urlencoded" || t == "multipart/form-data" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// me returns the acting user, so the page can show who is logged in (the
// cookie is HttpOnly).
func (s *server) me(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err == nil && user.ID == "" {
		err = exporter.ErrUnauthenticated
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	perms := user.Permissions
	if perms == nil {
		perms = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": user.ID, "permissions": perms})
}

// The export API.

func (s *server) list(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	opts := exporter.ListOptions{Owner: q.Get("owner"), Cursor: q.Get("cursor")}
	if l := q.Get("limit"); l != "" {
		if opts.Limit, err = strconv.Atoi(l); err != nil || opts.Limit <= 0 {
			s.fail(w, r, badRequest("limit must be a number from 1 to %d", exporter.MaxListLimit))
			return
		}
	}
	list, err := s.exp.ListExports(r.Context(), user, opts)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

// startRequest is the body of POST /exports. Absent fields take their
// defaults.
type startRequest struct {
	Rows          *int64  `json:"rows"`
	RowsPerSecond *int    `json:"rows_per_second"`
	Filename      *string `json:"filename"`
}

func (s *server) start(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxStartBody)
	if t := mediaType(r); t != "" && t != "application/json" {
		s.fail(w, r, errUnsupportedMediaType)
		return
	}
	var req startRequest
	if err := decodeJSON(r.Body, &req); err != nil && !errors.Is(err, errEmptyBody) {
		s.fail(w, r, err)
		return
	}
	rows, rate, filename := int64(defaultRows), 0, defaultFilename
	if req.Rows != nil {
		rows = *req.Rows
	}
	if rows < 1 || rows > maxRows {
		s.fail(w, r, badRequest("rows must be from 1 to %d", maxRows))
		return
	}
	if req.RowsPerSecond != nil {
		rate = *req.RowsPerSecond
	}
	if rate < 0 || rate > maxRate {
		s.fail(w, r, badRequest("rows_per_second must be from 0 (as fast as possible) to %d", maxRate))
		return
	}
	if req.Filename != nil {
		filename = sanitizeFilename(*req.Filename)
	}

	// A durable export: any instance of the service runs it (csvSource
	// makes its dataset from the args), and another resumes it if this
	// one stops.
	args, _ := json.Marshal(csvArgs{Rows: rows, RowsPerSecond: rate})
	job, err := s.exp.Enqueue(r.Context(), user, csvKind, args,
		exporter.WithTotal(datasetSize(rows)),
		exporter.WithMetadata(map[string]string{
			exporter.MetadataFilename:    filename,
			exporter.MetadataContentType: "text/csv",
			"rows":                       strconv.FormatInt(rows, 10),
			"rows_per_second":            strconv.Itoa(rate),
		}))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/exports/"+job.ID)
	writeJSON(w, http.StatusAccepted, job)
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	job, err := s.exp.GetExportStatus(r.Context(), user, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, job)
}

func (s *server) cancel(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	job, err := s.exp.CancelExport(r.Context(), user, r.PathValue("id"))
	if err != nil {
		s.failJob(w, r, err, job)
		return
	}
	writeJSON(w, http.StatusOK, job)
}

// download serves a completed export with http.ServeContent, which answers
// Range, If-Range, If-None-Match and If-Modified-Since from the Download
// (a ReadSeeker), its ETag (the checksum) and its Last-Modified (the end).
func (s *server) download(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id := r.PathValue("id")
	d, err := s.exp.OpenExport(r.Context(), user, id)
	if errors.Is(err, exporter.ErrNotReady) {
		// OpenExport does not return the job; read it for its status.
		job, _ := s.exp.GetExportStatus(r.Context(), user, id)
		s.failJob(w, r, err, job)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer d.Close()
	job := d.Job()
	h := w.Header()
	ctype := job.Metadata[exporter.MetadataContentType]
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	h.Set("Content-Type", ctype)
	disposition := mime.FormatMediaType("attachment", map[string]string{"filename": job.Metadata[exporter.MetadataFilename]})
	if disposition == "" || job.Metadata[exporter.MetadataFilename] == "" {
		disposition = "attachment"
	}
	h.Set("Content-Disposition", disposition)
	h.Set("ETag", strconv.Quote(job.Checksum)) // "sha256:<hex>": no character needs escaping
	h.Set("Cache-Control", "private, no-cache")
	content := &readErrors{Download: d}
	http.ServeContent(w, r, "", job.FinishedAt, content)
	if content.err != nil && r.Context().Err() == nil {
		// The status line is gone; the client sees a short body.
		s.log.ErrorContext(r.Context(), "download failed", "job", id, "err", content.err)
	}
}

// readErrors remembers the first error of a Download's Read other than
// io.EOF: http.ServeContent does not report it.
type readErrors struct {
	*exporter.Download
	err error
}

func (r *readErrors) Read(p []byte) (int, error) {
	n, err := r.Download.Read(p)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

// events streams the job as Server-Sent Events: "event: job" with the
// job's JSON for each snapshot of WatchExport, then "event: end" after the
// terminal one. An error after the stream began is sent as "event: error"
// with the JSON error body. Comments (": ping") keep an idle stream open.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id := r.PathValue("id")

	// The stream ends when the client goes, or when the server shuts down.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.streams, cancel)()

	type snapshot struct {
		job *exporter.Job
		err error
	}
	snapshots := make(chan snapshot)
	go func() { // owned: this handler drains snapshots until it is closed
		defer close(snapshots)
		for job, err := range s.exp.WatchExport(ctx, user, id, exporter.WatchEvery(s.watchEvery)) {
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

	// The first snapshot is the job as it is, or why it cannot be watched:
	// an unknown id or another user's job is refused with a JSON error
	// while the status can still be set.
	var first snapshot
	select {
	case <-ctx.Done():
	case snap, ok := <-snapshots:
		if !ok { // WatchExport yields at least once unless ctx is done
			return
		}
		first = snap
	}
	if first.err != nil && ctx.Err() == nil {
		s.fail(w, r, first.err)
		return
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	rc := http.NewResponseController(w)
	// A server WriteTimeout would cut the stream; it has no deadline.
	_ = rc.SetWriteDeadline(time.Time{})
	w.WriteHeader(http.StatusOK)
	send := func(format string, args ...any) bool {
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// emit sends one snapshot and reports whether the stream goes on.
	emit := func(snap snapshot) bool {
		if snap.err != nil {
			status, body := errorBody(snap.err, nil)
			s.logFailure(r, status, snap.err)
			data, _ := json.Marshal(body)
			send("event: error\ndata: %s\n\n", data)
			return false
		}
		data, err := json.Marshal(snap.job)
		if err != nil {
			s.log.ErrorContext(r.Context(), "encoding a job", "job", id, "err", err)
			return false
		}
		if !send("event: job\ndata: %s\n\n", data) {
			return false
		}
		if snap.job.Status.Terminal() {
			send("event: end\ndata: {\"id\":%q,\"status\":%q}\n\n", snap.job.ID, snap.job.Status)
			return false
		}
		return true
	}
	// A stream of a server that shuts down ends at once, with a retry
	// the browser follows to another instance.
	if !send("retry: 2000\n\n") || ctx.Err() != nil || !emit(first) {
		return
	}
	ping := time.NewTicker(s.pingEvery)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ping.C:
			if !send(": ping\n\n") {
				return
			}
		case snap, ok := <-snapshots:
			if !ok || ctx.Err() != nil || !emit(snap) {
				return
			}
		}
	}
}

// Errors.

var (
	errEmptyBody            = errors.New("empty body")
	errUnsupportedMediaType = errors.New("send the body as application/json")
	errCrossOrigin          = errors.New("cross-origin request refused")
)

// apiError is the JSON body of every error response.
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	// Status is the job's, when the error is about its status (409).
	Status exporter.Status `json:"status,omitempty"`
}

// errorCodes maps errors to statuses and codes, first match wins.
var errorCodes = []struct {
	err    error
	status int
	code   string
}{
	{exporter.ErrUnauthenticated, http.StatusUnauthorized, "unauthenticated"},
	{exporter.ErrForbidden, http.StatusForbidden, "forbidden"},
	{exporter.ErrNotFound, http.StatusNotFound, "not_found"},
	{exporter.ErrFinished, http.StatusConflict, "finished"},
	{exporter.ErrNotReady, http.StatusConflict, "not_ready"},
	{exporter.ErrInvalid, http.StatusBadRequest, "invalid"},
	{errBadRequest, http.StatusBadRequest, "invalid"},
	{errEmptyBody, http.StatusBadRequest, "invalid"},
	{exporter.ErrTooLarge, http.StatusRequestEntityTooLarge, "too_large"},
	{exporter.ErrBusy, http.StatusServiceUnavailable, "busy"},
	{exporter.ErrClosed, http.StatusServiceUnavailable, "shutting_down"},
	{errUnsupportedMediaType, http.StatusUnsupportedMediaType, "unsupported_media_type"},
	{errCrossOrigin, http.StatusForbidden, "cross_origin"},
}

// errorBody returns the status and body for err. job, when not nil, is the
// job the error is about.
func errorBody(err error, job *exporter.Job) (int, apiError) {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return http.StatusRequestEntityTooLarge, apiError{
			Error: fmt.Sprintf("request body larger than %d bytes", tooBig.Limit), Code: "body_too_large"}
	}
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			body := apiError{Error: err.Error(), Code: c.code}
			if job != nil && (c.code == "finished" || c.code == "not_ready") {
				body.Status = job.Status
			}
			return c.status, body
		}
	}
	// Anything else (Redis down, a deadline) is ours: its text stays in
	// the log.
	return http.StatusInternalServerError, apiError{Error: "internal error", Code: "internal"}
}

// fail writes the error response for err.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	s.failJob(w, r, err, nil)
}

// failJob writes the error response for err about job, whose status it
// includes in a 409 (job may be nil).
func (s *server) failJob(w http.ResponseWriter, r *http.Request, err error, job *exporter.Job) {
	status, body := errorBody(err, job)
	s.logFailure(r, status, err)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, body)
}

func (s *server) logFailure(r *http.Request, status int, err error) {
	switch {
	case r.Context().Err() != nil:
		s.log.DebugContext(r.Context(), "client went away", "path", r.URL.Path, "err", err)
	case status >= 500 && status != http.StatusServiceUnavailable:
		s.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	default:
		s.log.DebugContext(r.Context(), "request refused", "method", r.Method, "path", r.URL.Path, "err", err)
	}
}

// Helpers.

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"error":"internal error","code":"internal"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}

// decodeJSON decodes exactly one JSON value from body into v: unknown
// fields and trailing data are errors. An empty body is errEmptyBody.
func decodeJSON(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return err
		case errors.Is(err, io.EOF):
			return errEmptyBody
		}
		return badRequest("invalid JSON body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("invalid JSON body: data after the object")
	}
	return nil
}

func mediaType(r *http.Request) string {
	t, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return t
}

// sanitizeFilename makes name safe to show and to send back in a
// Content-Disposition header: the last path element, letters, digits and
// " .,_-()+" only (others become "_"), no leading dots or spaces, at most
// maxFilename bytes. An empty result is defaultFilename.
func sanitizeFilename(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), strings.ContainsRune(" .,_-()+", r):
			return r
		default:
			return '_'
		}
	}, strings.ToValidUTF8(name, "_"))
	name = strings.TrimRight(strings.TrimLeft(name, ". "), " ")
	if len(name) > maxFilename {
		cut := maxFilename
		for cut > 0 && !utf8.RuneStart(name[cut]) {
			cut--
		}
		name = name[:cut]
	}
	if name == "" {
		return defaultFilename
	}
	return name
}
