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

	// Abandon undoes a Create whose caller was told it failed (its reply
	// came too late, or never): it removes job id if that Create, with
	// lease, recorded it and it is still pending, and makes sure that a
	// copy of that Create arriving later records nothing. It returns nil
	// whether or not the job had been recorded.
	Abandon(ctx context.Context, id string, lease Lease) error

	// Get returns the job. It returns an error wrapping ErrNotFound if the
	// job does not exist, expired, or (when owner is not "") belongs to
	// someone else; in that last case it changes nothing. A pending or
	// running job whose lease lapsed is first recorded as failed with
	// CodeWorkerLost, so every reader sees the same, final answer.
	Get(ctx context.Context, id, owner string) (*Job, error)

	// Write applies w in one atomic step: with w.Begin it moves a pending
	// job to running; it appends w.Chunks at w.Index; with w.Final it ends
	// the job with that status. Chunks that are already stored (a retried
	// write) are not stored again; chunks that do not follow the stored
	// ones are an error. A copy of an earlier Write that arrives late,
	// twice or in part never changes what is stored at any index. A
	// completing write checks that the stored chunks are all still there,
	// else it fails with an error wrapping ErrCorrupt and leaves the job
	// live (its owner fails it).
	// Write renews lease. Ending a job with the status it already has (a
	// retried final write) succeeds.
	Write(ctx context.Context, id string, lease Lease, w ChunkWrite) error

	// Renew extends the lease of each held job and the job's retention, in
	// as few round trips as the store can, and keeps each owner's listing
	// (List) for at least twice retention from now, so that an export that
	// runs longer than its retention stays listed. It returns one error per
	// job, in held's order: nil once renewed, one wrapping ErrLeaseLost or
	// ErrNotFound when the lease is no longer the job's (cancelled,
	// finished, lapsed, or the job is gone), or the store's error.
	Renew(ctx context.Context, retention time.Duration, held []Held) []error

	// Cancel records the job as cancelled with reason (Job.Error) and
	// CodeCancelled, removes its data and
	// its lease, and announces it to Subscribe. A cancelled job is returned
	// as it is with a nil error; a completed or failed one is returned
	// unchanged with an error wrapping ErrFinished. When owner is not "",
	// another user's job is ErrNotFound and left unchanged.
	Cancel(ctx context.Context, id, owner, reason string) (*Job, error)

	// ReadChunks returns up to n chunks of a completed job starting at
	// index first, and none of a failed or cancelled one (their data is
	// removed). What it returns for a live job is the store's business: the
	// Exporter reads completed jobs only. It returns an error wrapping
	// ErrNotFound if the job is gone.
	ReadChunks(ctx context.Context, id string, first, n int) ([][]byte, error)

	// Subscribe returns the stream of events: jobs reaching a terminal
	// status (cancels included) and the progress of watched jobs, on every
	// instance.
	Subscribe(ctx context.Context) (Subscription, error)

	// Watch asks for progress events of job id (Event with a live status,
	// after each store write) for ttl; a watcher renews it.
	Watch(ctx context.Context, id string, ttl time.Duration) error

	// Transient reports whether err, returned by one of the Store's calls,
	// may pass if the call is repeated (a dropped connection, a server that
	// is restarting or failing over), rather than being a final answer:
	// the store's verdicts (errors wrapping ErrLeaseLost, ErrNotFound,
	// ErrInvalid, ErrCorrupt, ErrFinished, ErrNotReplicated) and a done
	// context are final. The Exporter repeats a call that failed
	// transiently for as long as a lease allows.
	Transient(err error) bool

	// List returns up to limit of owner's jobs, newest first, starting after
	// cursor ("" for the newest), and the cursor of the next page ("" after
	// the last). Newest is by the store's clock when it indexed the job,
	// which a distributed store may read on another node than CreatedAt:
	// jobs created milliseconds apart may come in either order. Jobs that
	// expired are skipped (and forgotten). A cursor the store did not hand
	// out is an error wrapping ErrInvalid.
	List(ctx context.Context, owner, cursor string, limit int) (jobs []*Job, next string, err error)
}

// Lease is a run's claim on a job: a random token and how long the claim
// lasts unless renewed.
type Lease struct {
	Token string
	TTL   time.Duration
}

// Held is a job whose lease its instance holds, for Store.Renew.
type Held struct {
	ID    string
	Owner string
	Lease Lease
}

// ChunkWrite is one Store.Write.
type ChunkWrite struct {
	Begin  bool     // move a pending job to running first
	Index  int64    // index of Chunks[0]
	Chunks [][]byte // each exactly the job's ChunkSize but for the export's last
	Bytes  int64    // the job's Bytes once Chunks are stored
	// Read is the bytes read from the source so far (Job.Read), ahead of
	// the stored ones while a chunk fills: a store keeps the largest Read
	// it was given. 0 changes nothing. A write with Read and no Chunks is a
	// run's progress report.
	Read int64

	Final    Status // "", StatusCompleted or StatusFailed
	Checksum string // with StatusCompleted: "sha256:<hex>" of all bytes
	Count    int64  // with StatusCompleted: how many chunks the job must hold
	Reason   string // with StatusFailed: Job.Error
	Code     string // with StatusFailed: Job.ErrorCode

	// Hash is the SHA-256 state (encoding.BinaryMarshaler) after Chunks, for
	// a durable export: a Store keeps the last one applied with the chunks
	// and hands it to the attempt that resumes the export (Queue.Claim).
	// Nil for the others.
	Hash []byte

	// With StatusCompleted: how many copies of the store besides the one
	// written (replicas) must hold the completion, and every write before
	// it, within ReplicaTimeout before Write returns nil and announces the
	// end; else an error wrapping ErrNotReplicated, and the job has not
	// read completed. 0 does not wait. This is Config.MinReplicas, a
	// durability requirement any store can state; how it is met (WAIT, on
	// Redis) is the store's. A store without replicas refuses Replicas > 0.
	Replicas       int
	ReplicaTimeout time.Duration
}

// Event is a job reaching a terminal status, or the progress of a watched
// job (a live Status and no Job).
type Event struct {
	ID     string
	Status Status
	Job    *Job // the job as it ended, when the store sends it along; else nil
	// Kind is set, with StatusPending, when a durable export of this kind
	// became ready to claim (Queue): enqueued, retried or resumed.
	Kind string
}

// Subscription delivers store events. It is used by one goroutine at a
// time.
type Subscription interface {
	// Receive waits up to timeout (0: until ctx is done) for the next event.
	// It returns the zero Event and a nil error when timeout passed first,
	// and ctx's error when ctx is done. Events can be lost (for example
	// across a reconnect): callers re-read the store.
	Receive(ctx context.Context, timeout time.Duration) (Event, error)
	Close() error
}

// ErrLeaseLost is returned by Store writes made with a lease that is no
// longer the job's: the job was cancelled or finished, or the lease lapsed.
// The Exporter stops the run quietly when it sees it.
var ErrLeaseLost = errors.New("lease lost")
