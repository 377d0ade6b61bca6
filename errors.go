package exporter

import "errors"

// Sentinel errors. Every error the package returns wraps at most one of
// these where one applies; match them with errors.Is.
var (
	// ErrUnauthenticated is returned by every call made with an empty User.ID.
	ErrUnauthenticated = errors.New("exporter: unauthenticated")
	// ErrForbidden is returned by StartExport when the user lacks
	// Config.Permission, or when the PermissionChecker failed (fail closed).
	ErrForbidden = errors.New("exporter: forbidden")
	// ErrNotFound is returned for an id that is unknown, malformed, expired
	// or owned by another user. It never reveals which of these applies.
	ErrNotFound = errors.New("exporter: export not found")
	// ErrFinished is returned by CancelExport for an export that already
	// completed or failed; the export is returned unchanged with it.
	ErrFinished = errors.New("exporter: export already finished")
	// ErrNotReady is returned by OpenExport for an export that has not
	// completed (pending, running, failed or cancelled).
	ErrNotReady = errors.New("exporter: export not completed")
	// ErrTooLarge is returned by StartExport when WithTotal exceeds
	// Config.MaxBytes, and recorded in Job.Error when an export passes it.
	ErrTooLarge = errors.New("exporter: export too large")
	// ErrBusy is returned by StartExport when Config.MaxPending or
	// Config.MaxPerUser is reached. Nothing is written; retry later.
	ErrBusy = errors.New("exporter: too many exports")
	// ErrClosed is returned by StartExport after Shutdown was called.
	ErrClosed = errors.New("exporter: exporter shut down")
	// ErrCorrupt is returned by Download when the bytes read do not match
	// the export's recorded checksum or chunks are missing.
	ErrCorrupt = errors.New("exporter: export data corrupt")
	// ErrWorkerLost is recorded in Job.Error when the instance that held a
	// pending or running export stopped renewing its lease.
	ErrWorkerLost = errors.New("exporter: worker lost")
	// ErrCancelled is recorded in Job.Error of a cancelled export and is
	// the cause of the context its copy ran under.
	ErrCancelled = errors.New("exporter: export cancelled")
	// ErrNotReplicated is recorded in Job.Error of an export whose
	// completion did not reach Config.MinReplicas replicas in time.
	ErrNotReplicated = errors.New("exporter: not replicated")
	// ErrInvalid is returned for malformed arguments: a nil reader, a
	// negative WithTotal, metadata beyond its limits, an invalid Config.
	ErrInvalid = errors.New("exporter: invalid argument")
)
