package exporterhttp

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
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

// list is GET /?cursor=&limit=&status=: a page of the caller's exports,
// newest first, of one status if asked.
func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	user, ok := h.user(w, r)
	if !ok {
		return
	}
	opts, err := listOptions(r.URL.Query())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	list, err := h.exp.ListExports(r.Context(), user, opts)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, exportList{Exports: list.Jobs, Next: list.Next})
}

// statuses are the values of ?status=, in their lifecycle's order.
var statuses = []exporter.Status{exporter.StatusPending, exporter.StatusRunning,
	exporter.StatusCompleted, exporter.StatusFailed, exporter.StatusCancelled}

// listOptions reads the parameters every listing takes: limit, cursor and
// status. Its error is a 400 "invalid" that names the parameter.
func listOptions(q url.Values) (exporter.ListOptions, error) {
	invalid := func(format string, args ...any) (exporter.ListOptions, error) {
		return exporter.ListOptions{}, &apiError{status: http.StatusBadRequest, code: "invalid", title: "Invalid request",
			detail: fmt.Sprintf(format, args...)}
	}
	opts := exporter.ListOptions{Cursor: q.Get("cursor"), Status: exporter.Status(q.Get("status"))}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > exporter.MaxListLimit {
			return invalid("limit must be a number from 1 to %d, not %s", exporter.MaxListLimit, echo(l))
		}
		opts.Limit = n
	}
	if len(opts.Cursor) > maxCursor {
		return invalid("cursor is not one this service handed out")
	}
	if opts.Status != "" && !slices.Contains(statuses, opts.Status) {
		return invalid("status must be pending, running, completed, failed or cancelled, not %s", echo(string(opts.Status)))
	}
	return opts, nil
}

// status is GET /{id}: the export.
func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	user, id, ok := h.export(w, r)
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
	user, id, ok := h.export(w, r)
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
