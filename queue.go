package exporter

import (
	"context"
	"time"
)

// Queue is the ability of a Store to hold durable exports (Enqueue): a
// queue that any instance claims from, and attempts that another instance
// resumes when they stop without ending their export. RedisStore
// implements it; an Exporter with Config.Sources needs a Store that does.
//
// A durable export is a job with a Kind. It is live (pending, then
// running) until it completes, fails or is cancelled, across as many
// attempts as that takes; between attempts no lease holds it, and reading
// it changes nothing (it does not fail as worker lost). Writes of an
// attempt are fenced by its lease exactly as a Store's other writes, and
// carry the SHA-256 state of the stored chunks (ChunkWrite.Hash), which
// the next attempt resumes from.
type Queue interface {
	// Enqueue records job (pending, with Kind and Args) and queues it. It
	// fails if the id exists. token identifies this call to Abandon, which
	// undoes it as it undoes a Create. maxAttempts is how many attempts the
	// export gets in all. The store sets the times, as Create does.
	Enqueue(ctx context.Context, job *Job, token string, maxAttempts int, retention time.Duration) (*Job, error)

	// Claim takes up to len(leases) ready durable exports of kinds, each
	// from the owner whose turn it is (owners with work take turns),
	// unless that owner already runs maxPerUser attempts on all instances
	// together (0: no cap), and begins their next attempts, each
	// with the lease it runs under (Claim.Lease), one of leases. It returns
	// none and a nil error when none
	// is ready. An export whose every allowed attempt began is failed
	// instead (with its last attempt's error, or as worker lost) and not
	// returned.
	Claim(ctx context.Context, kinds []string, maxPerUser int, leases []Lease) ([]*Claim, error)

	// Release ends the attempt of job that holds lease without ending the
	// export, and queues the export again after delay. retry is the
	// attempt's error (counted toward the export's attempts); nil hands
	// the attempt back (Shutdown), which does not count. It returns an
	// error wrapping ErrLeaseLost if lease is not the job's.
	Release(ctx context.Context, job *Job, lease Lease, retry *Reason, delay time.Duration) error

	// Settle tells the queue that the attempt of job, claimed by this
	// instance, is over and its export ended (completed, failed or
	// cancelled), so it no longer counts toward its owner's attempts.
	Settle(ctx context.Context, job *Job) error

	// Recover finds the attempts whose lease lapsed (their instance died,
	// or lost the store for longer than its lease) and queues their
	// exports again, ready at once; it settles those whose export ended.
	// Any instance may call it at any time; each lapsed attempt is queued
	// once. It returns how many it queued.
	Recover(ctx context.Context) (int, error)
}

// Claim is a durable export that Queue.Claim began an attempt of.
type Claim struct {
	Job   *Job  // running, with Attempt counting this attempt
	Lease Lease // the lease the attempt runs under
	// Chunks is how many chunks are stored; Job.Bytes is their size.
	Chunks int64
	// Hash is the SHA-256 state (encoding.BinaryMarshaler) of the stored
	// chunks: nil when none is stored.
	Hash []byte
	// Left is how many attempts the export has after this one.
	Left int
}

// Reason is why an attempt, or an export, ended: Job.Error and
// Job.ErrorCode.
type Reason struct {
	Text string
	Code string
}
