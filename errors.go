package exporter

import (
	"errors"
	"strconv"
	"unicode/utf8"
)

// Sentinel errors. Every error the package returns wraps at most one of
// these where one applies; match them with errors.Is.
//
// Their text carries no package prefix: the Exporter's methods add it once,
// with the operation and the job's id, at the boundary ("exporter: start:
// forbidden: user \"alice\" lacks permission \"exporter\"", "exporter:
// open 6b1f…: export not completed: status running"). Compare errors with
// errors.Is, never by their text.
var (
	// ErrUnauthenticated is returned by every call made with an empty User.ID.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden is returned by StartExport when the user lacks
	// Config.Permission, or when the PermissionChecker failed (fail closed).
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound is returned for an id that is unknown, malformed, expired
	// or owned by another user. It never reveals which of these applies.
	ErrNotFound = errors.New("export not found")
	// ErrFinished is returned by CancelExport for an export that already
	// completed or failed; the export is returned unchanged with it.
	ErrFinished = errors.New("export already finished")
	// ErrNotReady is returned by OpenExport for an export that has not
	// completed (pending, running, failed or cancelled).
	ErrNotReady = errors.New("export not completed")
	// ErrTooLarge is returned by StartExport when WithTotal exceeds
	// Config.MaxBytes, and is why an export that passes it fails
	// (CodeTooLarge).
	ErrTooLarge = errors.New("export too large")
	// ErrBusy is returned by StartExport when Config.MaxPending or
	// Config.MaxPerUser is reached. Nothing is written; retry later.
	ErrBusy = errors.New("too many exports")
	// ErrClosed is returned by StartExport after Shutdown was called, and
	// is why an export that Shutdown gave up on fails (CodeShutdown).
	ErrClosed = errors.New("exporter shut down")
	// ErrCorrupt is returned by Download when the bytes read do not match
	// the export's recorded checksum or chunks are missing, and is why an
	// export whose stored chunks disappeared while it ran fails
	// (CodeCorrupt).
	ErrCorrupt = errors.New("export data corrupt")
	// ErrWorkerLost is why a pending or running export fails when the
	// instance that held it stopped renewing its lease (CodeWorkerLost).
	ErrWorkerLost = errors.New("worker lost")
	// ErrCancelled is why a cancelled export ended (CodeCancelled), and the
	// cause of the context its copy ran under.
	ErrCancelled = errors.New("export cancelled")
	// ErrNotReplicated is why an export fails whose completion did not
	// reach Config.MinReplicas replicas in time (CodeNotReplicated).
	ErrNotReplicated = errors.New("not replicated")
	// ErrInvalid is returned for malformed arguments: a nil reader, a
	// negative WithTotal, metadata beyond its limits, an invalid Config.
	ErrInvalid = errors.New("invalid argument")
)

// maxEcho is how many bytes of a caller's input an error text quotes.
const maxEcho = 64

// quoteCapped quotes input for an error text, cut to maxEcho bytes (on a
// rune boundary, marked with "..."): an error must not carry back
// whatever a caller sent, however long.
func quoteCapped(input string) string {
	if len(input) <= maxEcho {
		return strconv.Quote(input)
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(input[cut]) {
		cut--
	}
	return strconv.Quote(input[:cut]) + "..."
}

// idText is a job id as an error text quotes it: whole when it is one,
// capped when it is not (a caller may send anything as an id).
func idText(id string) string {
	if validID(id) {
		return id
	}
	return quoteCapped(id)
}

// NotReadyError is OpenExport's error for an export that has not
// completed. It wraps ErrNotReady and carries the job as it was read.
type NotReadyError struct {
	Job *Job
}

func (e *NotReadyError) Error() string {
	return ErrNotReady.Error() + ": status " + string(e.Job.Status)
}
func (e *NotReadyError) Unwrap() error { return ErrNotReady }
