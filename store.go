package exporter

import (
	"context"
	"errors"
	"time"
)

// Store is where an Exporter keeps jobs and their bytes. RedisStore is the
// implementation; the interface exists so that the Exporter's contract with
// its storage is written down, and so tests can wrap a Store to inject
// faults. Every method is one atomic operation on one job, safe for
// concurrent use, and honours ctx.
//
// Writes by the instance that runs a job carry its Lease. A Store must
// apply such a write only while that lease is the job's current one and
// unexpired, and return an error wrapping ErrLeaseLost otherwise (fencing):
// a cancelled, finished or lapsed job never takes another byte.
type Store interface {
	// Create records job, which is pending, together with lease. It fails if
	// the id exists. The store sets CreatedAt, UpdatedAt and ExpiresAt from
	// its own clock and returns the job as stored.
	Create(ctx context.Context, job *Job, lease Lease, retention time.Duration) (*Job, error)

	// Get returns the job. It returns an error wrapping ErrNotFound if the
	// job does not exist or expired. A pending or running job whose lease
	// lapsed is first recorded as failed with ErrWorkerLost's text, so every
	// reader sees the same, final answer.
	Get(ctx context.Context, id string) (*Job, error)

	// Begin moves a pending job to running and renews lease. Calling it
	// again on a running job with the same lease succeeds.
	Begin(ctx context.Context, id string, lease Lease) (*Job, error)

	// Write stores w's chunk (if any) at its index and, when w.Final is set,
	// ends the job with that status in the same operation. A chunk whose
	// index is already stored is ignored (a retried write); an index past the
	// next one is an error. Write renews lease. Ending a job with a status it
	// already has (a retried final write) succeeds.
	Write(ctx context.Context, id string, lease Lease, w ChunkWrite) (*Job, error)

	// Renew extends lease and the job's retention.
	Renew(ctx context.Context, id string, lease Lease) error

	// Cancel records the job as cancelled with reason, removes its data and
	// its lease, and notifies SubscribeCancels subscribers. A cancelled job
	// is returned as it is with a nil error; a completed or failed one is
	// returned unchanged with an error wrapping ErrFinished.
	Cancel(ctx context.Context, id string, reason string) (*Job, error)

	// ReadChunks returns up to n stored chunks starting at index first. It
	// returns an error wrapping ErrNotFound if the job is gone.
	ReadChunks(ctx context.Context, id string, first, n int) ([][]byte, error)

	// SubscribeJob subscribes to the ends of job id: a message arrives
	// when it reaches a terminal status.
	SubscribeJob(ctx context.Context, id string) (Subscription, error)

	// SubscribeCancels subscribes to the ids of jobs cancelled anywhere.
	SubscribeCancels(ctx context.Context) (Subscription, error)
}

// Lease is a run's claim on a job: a random token and how long the claim
// lasts unless renewed.
type Lease struct {
	Token string
	TTL   time.Duration
}

// ChunkWrite is one Store.Write: an optional chunk and an optional end.
type ChunkWrite struct {
	Index int64  // chunk index; -1 when there is no chunk
	Data  []byte // the chunk's bytes; exactly the job's ChunkSize but for the last chunk
	Bytes int64  // bytes stored once this chunk is (the job's new Bytes)

	Final    Status // "", StatusCompleted or StatusFailed
	Checksum string // with StatusCompleted: "sha256:<hex>" of all bytes
	Chunks   int64  // with StatusCompleted: how many chunks the job must hold
	Reason   string // with StatusFailed: Job.Error
}

// Subscription delivers store notifications. It is used by one goroutine
// at a time.
type Subscription interface {
	// Receive waits up to timeout (0: until ctx is done) for the next
	// notification and returns its payload: a job id for SubscribeCancels,
	// a status for SubscribeJob. It returns "", nil when timeout passed
	// first, and ctx's error when ctx is done. Notifications can be lost
	// (for example across a reconnect): callers re-read the store.
	Receive(ctx context.Context, timeout time.Duration) (string, error)
	Close() error
}

// ErrLeaseLost is returned by Store writes made with a lease that is no
// longer the job's: the job was cancelled or finished, or the lease lapsed.
// The Exporter stops the run quietly when it sees it.
var ErrLeaseLost = errors.New("exporter: lease lost")
