package exporterhttp

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/exporterkit/exporter"
)

// typeBase is the start of every problem type URI; the code follows the
// "#" and the package documentation lists the codes.
const typeBase = "https://github.com/exporterkit/exporter/exporterhttp#"

// retryAfter is the Retry-After of a 503, in seconds: soon enough for a
// client to try another instance behind the same address.
const retryAfter = "1"

// maxEcho bounds what an error detail repeats of the request (an id, a
// kind, a field name), before quoting.
const maxEcho = 64

// problem is an RFC 9457 problem document, the body of every error
// response. Export is an extension member: the export a 409 is about.
type problem struct {
	Type   string        `json:"type"`
	Title  string        `json:"title"`
	Status int           `json:"status"`
	Detail string        `json:"detail,omitempty"`
	Code   string        `json:"code"`
	Export *exporter.Job `json:"export,omitempty"`
}

// apiError is an error this package answers with a status and code of its
// own; its detail is safe to send.
type apiError struct {
	status int
	code   string
	title  string
	detail string
}

func (e *apiError) Error() string { return e.detail }

// sentinels maps the root package's errors to a status, a code, a title and
// a fixed detail: the errors' own text may carry what a PermissionChecker
// or the store said, which is the service's business. The first match wins.
var sentinels = []struct {
	err    error
	status int
	code   string
	title  string
	detail string // "" sends the error's text, capped
}{
	{exporter.ErrUnauthenticated, http.StatusUnauthorized, "unauthenticated", "Unauthenticated",
		"the request is not authenticated"},
	{exporter.ErrForbidden, http.StatusForbidden, "forbidden", "Forbidden",
		"the user lacks the permission this needs"},
	{exporter.ErrNotFound, http.StatusNotFound, "not_found", "Export not found",
		"no such export: it is unknown, expired or another user's"},
	{exporter.ErrFinished, http.StatusConflict, "finished", "Export already finished",
		"the export completed or failed before it could be cancelled"},
	{exporter.ErrNotReady, http.StatusConflict, "not_completed", "Export not completed",
		"only a completed export can be downloaded"},
	{exporter.ErrInvalid, http.StatusBadRequest, "invalid", "Invalid request", ""},
	{exporter.ErrTooLarge, http.StatusRequestEntityTooLarge, "too_large", "Too large",
		"the export would be larger than the service allows"},
	{exporter.ErrBusy, http.StatusServiceUnavailable, "busy", "Too many exports",
		"too many exports are running; retry later"},
	{exporter.ErrClosed, http.StatusServiceUnavailable, "shutting_down", "Shutting down",
		"this instance is shutting down; retry"},
	{errors.ErrUnsupported, http.StatusNotImplemented, "unsupported", "Not supported by the store",
		"the Exporter's store cannot do this (it lists no exports across owners, or keeps no instance reports)"},
}

// maxDetail bounds a detail taken from an error's text.
const maxDetail = 256

// problemFor returns the problem document for err; job, if not nil, is the
// export err is about, sent along with a 409.
func problemFor(err error, job *exporter.Job) problem {
	p := problem{Status: http.StatusInternalServerError, Code: "internal",
		Title: "Internal server error", Detail: "the server failed to answer; the error is in its log"}
	var ae *apiError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		p.Status, p.Code, p.Title, p.Detail = ae.status, ae.code, ae.title, ae.detail
	case errors.As(err, &tooBig):
		p.Status, p.Code, p.Title = http.StatusRequestEntityTooLarge, "too_large", "Too large"
		p.Detail = fmt.Sprintf("the request body is larger than %d bytes", tooBig.Limit)
	default:
		for _, s := range sentinels {
			if errors.Is(err, s.err) {
				p.Status, p.Code, p.Title, p.Detail = s.status, s.code, s.title, s.detail
				if p.Detail == "" {
					p.Detail = truncate(err.Error(), maxDetail)
				}
				break
			}
		}
	}
	if p.Status == http.StatusConflict {
		p.Export = job
	}
	p.Type = typeBase + p.Code
	return p
}

// fail answers err as a problem document and logs it: a 500 at Error with
// the error's text (which the response does not carry), the rest at Debug.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	h.failJob(w, r, err, nil)
}

// failJob is fail for an error about job (may be nil).
func (h *Handler) failJob(w http.ResponseWriter, r *http.Request, err error, job *exporter.Job) {
	writeProblem(w, h.problem(r, err, job))
}

// problem returns the problem document of err, about job (may be nil),
// and logs it.
func (h *Handler) problem(r *http.Request, err error, job *exporter.Job) problem {
	p := problemFor(err, job)
	level := slog.LevelDebug
	if p.Status == http.StatusInternalServerError && r.Context().Err() == nil {
		level = slog.LevelError
	}
	h.log().LogAttrs(r.Context(), level, "exporterhttp: request failed",
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", p.Status), slog.String("code", p.Code), slog.Any("err", err))
	return p
}

// writeProblem sends p; a 503 says when to retry.
func writeProblem(w http.ResponseWriter, p problem) {
	if p.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeBody(w, p.Status, "application/problem+json", p)
}

// writeJSON sends v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	writeBody(w, status, "application/json", v)
}

func writeBody(w http.ResponseWriter, status int, contentType string, v any) {
	data, err := json.Marshal(v)
	if err != nil { // a Job always marshals; this is a bug, said as a problem
		status, contentType = http.StatusInternalServerError, "application/problem+json"
		data = []byte(`{"type":"` + typeBase + `internal","title":"Internal server error","status":500,"code":"internal"}`)
	}
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}

// echo returns s quoted, cut to maxEcho bytes on a UTF-8 boundary with "…"
// after the cut, for an error detail.
func echo(s string) string {
	if len(s) > maxEcho {
		return strconv.Quote(truncate(s, maxEcho)) + "…"
	}
	return strconv.Quote(s)
}

// truncate cuts s to at most n bytes on a UTF-8 boundary, and replaces
// invalid UTF-8.
func truncate(s string, n int) string {
	if len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
