package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/exporterkit/exporter"
)

// Exit codes. They are part of the tool's interface: scripts test them, so
// a code never changes its meaning.
const (
	exitOK          = 0
	exitError       = 1  // anything below does not cover: Redis unreachable, a local file
	exitUsage       = 2  // bad flags or arguments, a malformed id (ErrInvalid)
	exitNotFound    = 3  // ErrNotFound: unknown, expired or another user's export
	exitNotReady    = 4  // ErrNotReady: download of an export that has not completed
	exitFinished    = 5  // ErrFinished: cancel of an export that already completed or failed
	exitFailed      = 6  // the export ended failed (ErrWorkerLost, a source error, ...)
	exitCancelled   = 7  // the export ended cancelled
	exitPermission  = 8  // ErrUnauthenticated, ErrForbidden
	exitBusy        = 9  // ErrBusy, ErrTooLarge at start
	exitCorrupt     = 10 // ErrCorrupt, or a downloaded file whose SHA-256 does not match
	exitInterrupted = 130
)

const exitCodesHelp = `Exit codes:
  0    ok (status, list: the export or list was read, whatever its status)
  1    other error: Redis unreachable, a local file, a timeout
  2    usage error: bad flags or arguments, a malformed export id
  3    export not found: unknown, expired, or another user's (admins: -admin)
  4    export not completed: nothing to download yet
  5    export already finished: nothing to cancel
  6    export failed (start, watch, wait)
  7    export cancelled (start, watch, wait)
  8    permission denied
  9    too many exports under way, or export too large
  10   data corrupt: checksum mismatch
  130  interrupted (Ctrl-C) while watching, waiting, listing or downloading
`

// exitCode maps an error to its exit code: the library's sentinels first
// unwrapped, then the tool's own outcomes.
func exitCode(err error) int {
	var coded *codedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &coded):
		return coded.code
	case errors.As(err, new(*usageError)), errors.Is(err, exporter.ErrInvalid):
		return exitUsage
	case errors.Is(err, exporter.ErrNotFound):
		return exitNotFound
	case errors.Is(err, exporter.ErrNotReady):
		return exitNotReady
	case errors.Is(err, exporter.ErrFinished):
		return exitFinished
	case errors.Is(err, exporter.ErrUnauthenticated), errors.Is(err, exporter.ErrForbidden):
		return exitPermission
	case errors.Is(err, exporter.ErrBusy), errors.Is(err, exporter.ErrTooLarge):
		return exitBusy
	case errors.Is(err, exporter.ErrCorrupt):
		return exitCorrupt
	case errors.Is(err, exporter.ErrCancelled):
		return exitCancelled
	case errors.Is(err, exporter.ErrWorkerLost), errors.Is(err, exporter.ErrNotReplicated):
		return exitFailed
	case errors.Is(err, context.Canceled):
		// The only cancel of the commands' context is a signal.
		return exitInterrupted
	}
	return exitError
}

// usageError is a mistake in the command line; cmd names the command
// whose help to point at ("" for the tool's). With showUsage the tool's
// usage follows the message, rather than a pointer to the help.
type usageError struct {
	cmd       string
	msg       string
	showUsage bool
}

func (e *usageError) Error() string { return e.msg }

func usageErrorf(cmd, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if cmd != "" {
		msg = cmd + ": " + msg
	}
	return &usageError{cmd: cmd, msg: msg}
}

// codedError is an outcome with its exit code: an export that ended
// failed or cancelled, a checksum that did not match here.
type codedError struct {
	code int
	msg  string
}

func (e *codedError) Error() string { return e.msg }

func codedErrorf(code int, format string, args ...any) error {
	return &codedError{code: code, msg: fmt.Sprintf(format, args...)}
}

// message is err's text for people. The library's errors begin with its
// package name ("exporter: status ID: export not found"), which says
// nothing to someone at a terminal and is dropped. The sentinels get a
// hint at what to do.
func message(err error) string {
	msg := strings.TrimPrefix(err.Error(), "exporter: ")
	msg = strings.ReplaceAll(msg, "\n", "; ") // errors.Join
	switch {
	case errors.Is(err, exporter.ErrNotFound):
		msg += " (unknown, expired, or another user's; an admin sees every export with -admin)"
	case errors.Is(err, exporter.ErrNotReady):
		msg += " ('exportctl wait ID' waits for its end)"
	case errors.Is(err, exporter.ErrForbidden) && !strings.Contains(msg, "permission check"):
		msg += " (an admin passes -admin)"
	case errors.Is(err, context.DeadlineExceeded):
		msg += " (the -timeout of a call ran out)"
	case errors.Is(err, context.Canceled):
		if strings.Contains(msg, context.Canceled.Error()) {
			msg = strings.Replace(msg, context.Canceled.Error(), "interrupted", 1)
		} else {
			msg = "interrupted: " + msg
		}
	}
	return msg
}

// terminalOutcome is the error, with its exit code, of a job's terminal
// status: nil when completed.
func terminalOutcome(job *exporter.Job) error {
	switch job.Status {
	case exporter.StatusCompleted:
		return nil
	case exporter.StatusCancelled:
		return codedErrorf(exitCancelled, "export %s cancelled after %s", job.ID, formatBytes(job.Bytes))
	case exporter.StatusFailed:
		return codedErrorf(exitFailed, "export %s failed after %s: %s", job.ID, formatBytes(job.Bytes), cleanReason(job.Error))
	}
	return codedErrorf(exitError, "export %s is %s, not finished", job.ID, job.Status)
}

// cleanReason is Job.Error without the library's prefix, which records
// stored by versions before reason codes begin with.
func cleanReason(reason string) string {
	if reason == "" {
		return "no reason recorded"
	}
	return strings.TrimPrefix(reason, "exporter: ")
}
