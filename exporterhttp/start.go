package exporterhttp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/exporterkit/exporter"
)

// maxStartBody bounds the body of a POST: args of up to exporter.MaxArgs
// and room for the rest.
const maxStartBody = exporter.MaxArgs + 16<<10

// startRequest is the body of a POST.
type startRequest struct {
	Kind     string            // required, one of Config.Kinds
	Args     json.RawMessage   // any JSON value, given to the Source as sent; nil when absent
	Filename string            // the download's name, sanitized
	Metadata map[string]string // exporter.WithMetadata
}

// start is POST /: it enqueues a durable export and answers 201 with the
// job and its Location.
func (h *Handler) start(w http.ResponseWriter, r *http.Request) {
	user, ok := h.user(w, r)
	if !ok {
		return
	}
	if t, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); t != "" && t != "application/json" {
		h.fail(w, r, &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type",
			title: "Unsupported media type", detail: "send the body as application/json"})
		return
	}
	req, err := decodeStart(http.MaxBytesReader(w, r.Body, maxStartBody))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !slices.Contains(h.kinds, req.Kind) {
		h.fail(w, r, h.unknownKind(req.Kind))
		return
	}
	if len(req.Args) > exporter.MaxArgs {
		h.fail(w, r, &apiError{status: http.StatusRequestEntityTooLarge, code: "too_large", title: "Too large",
			detail: fmt.Sprintf("args of %d bytes, at most %d", len(req.Args), exporter.MaxArgs)})
		return
	}
	md := maps.Clone(req.Metadata)
	name := req.Filename
	if name == "" {
		name = md[exporter.MetadataFilename]
	}
	if name = sanitizeFilename(name); name != "" {
		if md == nil {
			md = make(map[string]string, 1)
		}
		md[exporter.MetadataFilename] = name
	} else {
		delete(md, exporter.MetadataFilename)
	}
	var opts []exporter.StartOption
	if h.prepare != nil {
		prepared, err := h.prepare(r, user, req.Kind, req.Args)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		opts = append(opts, prepared...)
	}
	if len(md) > 0 {
		opts = append(opts, exporter.WithMetadata(md))
	}
	job, err := h.exp.Enqueue(r.Context(), user, req.Kind, req.Args, opts...)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", location(r, job.ID))
	writeJSON(w, http.StatusCreated, job)
}

func (h *Handler) unknownKind(kind string) error {
	quoted := make([]string, len(h.kinds))
	for i, k := range h.kinds {
		quoted[i] = echo(k)
	}
	known := "none"
	if len(quoted) > 0 {
		known = strings.Join(quoted, ", ")
	}
	return &apiError{status: http.StatusBadRequest, code: "unknown_kind", title: "Unknown kind",
		detail: fmt.Sprintf("kind %s is not one this service starts (%s)", echo(kind), known)}
}

// badJSON is the error of a body that is not the JSON this API takes.
func badJSON(format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, code: "bad_json", title: "Malformed JSON body",
		detail: fmt.Sprintf(format, args...)}
}

// decodeStart reads a startRequest: exactly one JSON object with no
// unknown members. Its errors are bad_json, or the body's read error
// (*http.MaxBytesError included). The members are decoded one by one so
// that no error names a Go type.
func decodeStart(body io.Reader) (startRequest, error) {
	var req startRequest
	dec := json.NewDecoder(body)
	var members map[string]json.RawMessage
	if err := dec.Decode(&members); err != nil {
		return req, decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil && !isJSONError(err) {
			return req, err
		}
		return req, badJSON("the body has data after its JSON object")
	}
	if members == nil {
		return req, badJSON("the body must be a JSON object")
	}
	for _, name := range slices.Sorted(maps.Keys(members)) {
		raw := members[name]
		var err error
		switch name {
		case "kind":
			if err = json.Unmarshal(raw, &req.Kind); err != nil {
				err = badJSON(`"kind" must be a string`)
			}
		case "args":
			req.Args = raw
		case "filename":
			if err = json.Unmarshal(raw, &req.Filename); err != nil {
				err = badJSON(`"filename" must be a string`)
			}
		case "metadata":
			if err = json.Unmarshal(raw, &req.Metadata); err != nil {
				err = badJSON(`"metadata" must be an object whose values are strings`)
			}
		default:
			err = badJSON("unknown member %s: the members are kind, args, filename and metadata", echo(name))
		}
		if err != nil {
			return req, err
		}
	}
	return req, nil
}

// decodeError turns an error of decoding the body into bad_json, but for
// the body's read errors.
func decodeError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return badJSON("the body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badJSON("the body ends inside its JSON value")
	case errors.As(err, &syntax):
		return badJSON("malformed JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		return badJSON("the body must be a JSON object")
	}
	return err
}

func isJSONError(err error) bool {
	var syntax *json.SyntaxError
	return errors.As(err, &syntax)
}

// location returns the Location of export id: the path the client sent,
// less the path the handler sees (what http.StripPrefix removed), then the
// id: "/exports/<id>" for a POST to "/exports/". When the request's path
// cannot be matched that way it is the relative reference "<id>", which a
// client resolves against the collection's URL ("/exports/").
func location(r *http.Request, id string) string {
	u, err := url.ParseRequestURI(r.RequestURI)
	if err != nil {
		return id
	}
	sent, seen := u.EscapedPath(), r.URL.EscapedPath()
	switch {
	case seen == "/" && !strings.HasSuffix(sent, "/"): // ServeHTTP turned "" into "/"
		return sent + "/" + id
	case strings.HasSuffix(sent, seen):
		return strings.TrimSuffix(sent, seen) + "/" + id
	}
	return id
}
