package exporterhttp

import (
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"github.com/exporterkit/exporter"
)

// download is GET /{id}/download: the bytes of a completed export through
// http.ServeContent, which answers Range, If-Range, If-None-Match,
// If-Modified-Since and HEAD from the Download (an io.ReadSeeker), the
// ETag (the checksum) and Last-Modified (when it finished).
func (h *Handler) download(w http.ResponseWriter, r *http.Request) {
	user, id, ok := h.export(w, r)
	if !ok {
		return
	}
	d, err := h.exp.OpenExport(r.Context(), user, id)
	if notReady, ok := errors.AsType[*exporter.NotReadyError](err); ok {
		h.failJob(w, r, err, notReady.Job) // the 409 carries the export as it was read
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer d.Close()
	job := d.Job()
	hdr := w.Header()
	hdr.Set("Content-Type", contentType(job.Metadata[exporter.MetadataContentType]))
	name := sanitizeFilename(job.Metadata[exporter.MetadataFilename])
	if name == "" {
		name = "export-" + job.ID
	}
	hdr.Set("Content-Disposition", contentDisposition(name))
	if tag := etag(job.Checksum); tag != "" {
		hdr.Set("ETag", tag)
	}
	hdr.Set("Cache-Control", "private, no-cache")
	content := &readErrors{Download: d}
	pw := &problemWriter{ResponseWriter: w}
	http.ServeContent(pw, r, "", job.FinishedAt, content)
	if content.err != nil && r.Context().Err() == nil {
		// The status line is gone: the client sees a body shorter than
		// its Content-Length.
		h.log().LogAttrs(r.Context(), slog.LevelError, "exporterhttp: download failed",
			slog.String("job", id), slog.Any("err", content.err))
	}
}

// contentType returns the media type stored with an export, normalized,
// or application/octet-stream when there is none or it does not parse.
func contentType(stored string) string {
	t, params, err := mime.ParseMediaType(stored)
	if err != nil {
		return "application/octet-stream"
	}
	if f := mime.FormatMediaType(t, params); f != "" {
		return f
	}
	return "application/octet-stream"
}

// etag returns the strong ETag of an export with checksum
// "sha256:<64 hex>": the hex, quoted. It returns "" for another form.
func etag(checksum string) string {
	sum, ok := strings.CutPrefix(checksum, "sha256:")
	if !ok || len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
		return ""
	}
	return `"` + sum + `"`
}

// readErrors remembers the first error of a Download's Read other than
// io.EOF, which http.ServeContent does not report.
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

// problemWriter turns the error responses of http.ServeContent (412, 416,
// and 500 when it cannot seek), which are plain text, into problem
// documents.
type problemWriter struct {
	http.ResponseWriter
	swallow bool // an error was answered: drop ServeContent's text
}

var serveContentErrors = map[int]*apiError{
	http.StatusPreconditionFailed: {status: http.StatusPreconditionFailed, code: "precondition_failed",
		title: "Precondition failed", detail: "the export does not match the request's preconditions (If-Match, If-Unmodified-Since)"},
	http.StatusRequestedRangeNotSatisfiable: {status: http.StatusRequestedRangeNotSatisfiable, code: "range_not_satisfiable",
		title: "Range not satisfiable", detail: "the requested range is not within the export"},
}

func (p *problemWriter) WriteHeader(code int) {
	switch {
	case p.swallow:
		return
	case code < 400:
		p.ResponseWriter.WriteHeader(code)
		return
	}
	p.swallow = true
	ae, ok := serveContentErrors[code]
	if !ok {
		ae = &apiError{status: code, code: "internal", title: "Internal server error",
			detail: "the server failed to answer; the error is in its log"}
	}
	p.Header().Del("Content-Disposition")
	writeProblem(p.ResponseWriter, problemFor(ae, nil))
}

func (p *problemWriter) Write(b []byte) (int, error) {
	if p.swallow {
		return len(b), nil
	}
	return p.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (p *problemWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }
