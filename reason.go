package exporter

import (
	"errors"
	"strings"
)

// Why an export ended. A failed or cancelled job stores a stable code
// (Job.ErrorCode) beside its human text (Job.Error): Job.Err maps the code
// to its sentinel, so the text can be reworded without breaking records
// already stored, and a service can count and branch on the code.

// Values of Job.ErrorCode. A code never changes meaning; new ones may be
// added, so treat an unknown code like CodeSource or CodeStore (the text
// says why).
const (
	CodeCancelled     = "cancelled"      // CancelExport (ErrCancelled)
	CodeWorkerLost    = "worker_lost"    // its instance stopped renewing its lease (ErrWorkerLost)
	CodeTooLarge      = "too_large"      // its source passed Config.MaxBytes (ErrTooLarge)
	CodeShutdown      = "shutdown"       // Shutdown gave up on it (ErrClosed)
	CodeNotReplicated = "not_replicated" // Config.MinReplicas not reached (ErrNotReplicated)
	CodeCorrupt       = "corrupt"        // stored chunks disappeared while it ran (ErrCorrupt)
	CodeSource        = "source"         // its source's Read failed; Job.Error is that error's text
	CodeStore         = "store"          // the store refused or failed a write; Job.Error says why
)

// codeSentinels are the codes that have a sentinel, in the order codeOf
// tries them.
var codeSentinels = []struct {
	code     string
	sentinel error
}{
	{CodeCancelled, ErrCancelled},
	{CodeShutdown, ErrClosed},
	{CodeWorkerLost, ErrWorkerLost},
	{CodeTooLarge, ErrTooLarge},
	{CodeNotReplicated, ErrNotReplicated},
	{CodeCorrupt, ErrCorrupt},
}

// legacyReasons are the texts that began Job.Error before codes were
// stored, when the sentinels' texts carried the package prefix: a job
// recorded then, which has no code, is decoded by them.
var legacyReasons = []struct{ prefix, code string }{
	{"exporter: worker lost", CodeWorkerLost},
	{"exporter: export too large", CodeTooLarge},
	{"exporter: export cancelled", CodeCancelled},
	{"exporter: exporter shut down", CodeShutdown},
	{"exporter: not replicated", CodeNotReplicated},
	{"exporter: export data corrupt", CodeCorrupt},
}

// codeOf is the code an export ended by cause gets.
func codeOf(cause error) string {
	for _, c := range codeSentinels {
		if errors.Is(cause, c.sentinel) {
			return c.code
		}
	}
	if errors.As(cause, new(*sourceError)) {
		return CodeSource
	}
	return CodeStore
}

// sourceError is an error of an export's source (its Read failed, or
// broke the io.Reader contract).
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// Err returns why a failed or cancelled job ended, or nil for any other
// status. Its text is Job.Error; it wraps the sentinel of Job.ErrorCode
// (ErrCancelled, ErrWorkerLost, ErrTooLarge, ErrClosed for a shutdown,
// ErrNotReplicated, ErrCorrupt), so errors.Is works across instances.
func (j *Job) Err() error {
	if j.Status != StatusFailed && j.Status != StatusCancelled {
		return nil
	}
	code := j.ErrorCode
	if code == "" { // recorded before codes were stored
		for _, l := range legacyReasons {
			if strings.HasPrefix(j.Error, l.prefix) {
				code = l.code
				break
			}
		}
	}
	for _, c := range codeSentinels {
		if c.code == code {
			return &recordedError{text: j.Error, sentinel: c.sentinel}
		}
	}
	return errors.New(j.Error)
}

// recordedError is an error read back from Job.Error.
type recordedError struct {
	text     string
	sentinel error
}

func (e *recordedError) Error() string { return e.text }
func (e *recordedError) Unwrap() error { return e.sentinel }
