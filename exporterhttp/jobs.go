package exporterhttp

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/exporterkit/exporter"
)

// maxCursor bounds a list cursor: those the store hands out are short.
const maxCursor = 256

// exportList is the body of GET /.
type exportList struct {
	Exports []*exporter.Job `json:"exports"`
	// Next is the cursor of the next page; absent after the last one.
	Next string `json:"next,omitempty"`
}

// list is GET /?cursor=&limit=: a page of the caller's exports, newest
// first.
func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	user, ok := h.user(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	opts := exporter.ListOptions{Cursor: q.Get("cursor")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > exporter.MaxListLimit {
			h.fail(w, r, &apiError{status: http.StatusBadRequest, code: "invalid", title: "Invalid request",
				detail: fmt.Sprintf("limit must be a number from 1 to %d, not %s", exporter.MaxListLimit, echo(l))})
			return
		}
		opts.Limit = n
	}
	if len(opts.Cursor) > maxCursor {
		h.fail(w, r, &apiError{status: http.StatusBadRequest, code: "invalid", title: "Invalid request",
			detail: "cursor is not one this service handed out"})
		return
	}
	list, err := h.exp.ListExports(r.Context(), user, opts)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, exportList{Exports: list.Jobs, Next: list.Next})
}

// status is GET /{id}: the export.
func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	user, ok := h.user(w, r)
	if !ok {
		return
	}
	id, ok := h.id(w, r)
	if !ok {
		return
	}
	job, err := h.exp.GetExportStatus(r.Context(), user, id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, job)
}

// cancel is DELETE /{id}: it cancels the export and answers it, 200.
// Cancelling a cancelled export succeeds again; a completed or failed one
// is 409 "finished", with the export.
func (h *Handler) cancel(w http.ResponseWriter, r *http.Request) {
	user, ok := h.user(w, r)
	if !ok {
		return
	}
	id, ok := h.id(w, r)
	if !ok {
		return
	}
	job, err := h.exp.CancelExport(r.Context(), user, id)
	if err != nil {
		h.failJob(w, r, err, job) // with ErrFinished, the export as it is
		return
	}
	writeJSON(w, http.StatusOK, job)
}
