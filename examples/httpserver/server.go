package main

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"time"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/exporterhttp"
)

// apiPrefix is where the service mounts the exporterhttp.Handler: the
// collection is apiPrefix+"/" and an export apiPrefix+"/{id}". The page
// learns it from the data-api attribute of its <body>.
const apiPrefix = "/exports"

// dashboardPath is where exporterhttp serves the operator's dashboard (all
// users' exports and the instances, for holders of the admin permission).
// The page links to it for admins.
const dashboardPath = apiPrefix + "/dashboard"

//go:embed static
var staticFiles embed.FS

// pageTemplate is the page: static/index.html with the settings the
// script needs (the API's prefix, the heartbeat of its event streams) and
// the kinds on offer.
var pageTemplate = template.Must(template.ParseFS(staticFiles, "static/index.html"))

// service is the example's HTTP service: the page, the demo login, the
// exporterhttp.Handler under apiPrefix, and whatever main adds to mux (the
// metrics). It is an http.Handler; create it with newService.
type service struct {
	mux *http.ServeMux
	api *exporterhttp.Handler
	log *slog.Logger
	// csrf refuses the demo login's writes from a page of another origin,
	// as exporterhttp refuses its own: the login is a cookie, which a page
	// on another port of this host could otherwise set or clear.
	csrf *http.CrossOriginProtection
	// page is the rendered page: it depends only on the configuration.
	page []byte
}

// newService returns the service for exp, whose Config.Sources must hold
// the kinds of dataset.go and whose AdminPermission must be
// adminPermission. heartbeat is the interval of the event streams'
// heartbeats (0 means exporterhttp.DefaultHeartbeat); the page learns it,
// and takes a stream that stays silent much longer as lost.
func newService(exp *exporter.Exporter, log *slog.Logger, heartbeat time.Duration) (*service, error) {
	if heartbeat == 0 {
		heartbeat = exporterhttp.DefaultHeartbeat
	}
	api, err := exporterhttp.New(exporterhttp.Config{
		Exporter:     exp,
		Authenticate: authenticate,
		Kinds:        kindNames(),
		Logger:       log,
		Heartbeat:    heartbeat,
		Prepare:      prepare,
		Dashboard:    true,
	})
	if err != nil {
		return nil, err
	}
	page, err := renderPage(heartbeat)
	if err != nil {
		return nil, err
	}
	s := &service{mux: http.NewServeMux(), api: api, log: log, csrf: http.NewCrossOriginProtection(), page: page}

	// The collection is apiPrefix+"/"; the exact path too, so that a POST
	// to apiPrefix is not redirected (a client may turn a redirected POST
	// into a GET).
	s.mux.Handle(apiPrefix+"/", http.StripPrefix(apiPrefix, api))
	s.mux.Handle(apiPrefix, http.StripPrefix(apiPrefix, api))

	s.mux.HandleFunc("GET /{$}", s.index)
	for _, name := range []string{"app.js", "style.css"} { // not index.html: it is a template
		s.mux.HandleFunc("GET /static/"+name, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFileFS(w, r, staticFiles, "static/"+name)
		})
	}
	s.mux.HandleFunc("POST /login", s.login)
	s.mux.HandleFunc("POST /logout", s.logout)
	s.mux.HandleFunc("GET /me", s.me)
	return s, nil
}

// ServeHTTP implements http.Handler: it sets the headers every response
// has, then routes the request.
func (s *service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "same-origin")
	s.mux.ServeHTTP(w, r)
}

// CloseStreams ends the API's event streams: register it with
// http.Server.RegisterOnShutdown, since a stream runs until its export
// ends. The page reconnects, to another instance if there is one.
func (s *service) CloseStreams() { s.api.CloseStreams() }

// pageData is what static/index.html is rendered with.
type pageData struct {
	API         string // apiPrefix
	HeartbeatMS int64  // the event streams' heartbeat, in milliseconds
	Dashboard   string // dashboardPath
	Kinds       []kindOption
}

// kindOption is a kind in the page's menu.
type kindOption struct {
	Name, Title string
	Rate        bool // the kind takes rows_per_second
}

func renderPage(heartbeat time.Duration) ([]byte, error) {
	data := pageData{API: apiPrefix, HeartbeatMS: heartbeat.Milliseconds(), Dashboard: dashboardPath}
	for _, k := range kinds {
		data.Kinds = append(data.Kinds, kindOption{Name: k.name, Title: k.title, Rate: k.rate})
	}
	var b bytes.Buffer
	if err := pageTemplate.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("rendering the page: %w", err)
	}
	return b.Bytes(), nil
}

func (s *service) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(s.page)
}

// writeJSON sends v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil { // the service's values always marshal
		writeProblem(w, http.StatusInternalServerError, "internal", "the server failed to answer")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}

// writeProblem answers an error of the service's own routes (the login,
// the metrics) as an RFC 9457 problem document, as exporterhttp answers
// its own, so that the page reads every error the same way: "detail" for
// people, "code" for code.
func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	data, _ := json.Marshal(map[string]any{
		"type": "about:blank", "title": http.StatusText(status), "status": status,
		"detail": detail, "code": code,
	})
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}
