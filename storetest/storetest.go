// Package storetest is the conformance suite of exporter.Store: every
// implementation runs it, so the contract that the Store's doc comments
// state is executable. RedisStore runs it on miniredis, a standalone Redis
// server and a Redis Cluster.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{
//			New: func(t *testing.T) exporter.Store { return newStoreForTest(t) },
//		})
//	}
//
// Each subtest is named for the part of the contract it checks (Fencing,
// Cancel, List, ...), so a failure names the sentence that broke. A store
// that implements exporter.Queue (durable exports) also runs the Queue*
// subtests: claims, attempts, releases, recovery, cancels, turns and
// MaxPerUser.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/exporterkit/exporter"
	"github.com/google/uuid"
)

// Harness is what the suite needs of the store under test.
type Harness struct {
	// New returns a store for one subtest that holds none of the jobs of
	// another (a store on a key prefix of its own, say). Required.
	New func(t *testing.T) exporter.Store
	// Elapse lets d pass on the store's clock, so that leases lapse and
	// retention runs out. Nil sleeps d, which suits a real server; a fake
	// one advances its clock instead.
	Elapse func(t *testing.T, d time.Duration)
}

// Lease and retention times the suite uses. A lease lapses within
// lapse; a write renews it for leaseTTL.
const (
	leaseTTL  = 400 * time.Millisecond
	lapse     = 600 * time.Millisecond
	retention = time.Hour
	chunkSize = 1 << 10
)

// Run runs the conformance suite against the stores h makes: the Store
// contract, and the Queue ability's if the store has it (its subtests are
// skipped otherwise).
func Run(t *testing.T, h Harness) {
	if h.New == nil {
		t.Fatal("storetest: Harness.New is nil")
	}
	if h.Elapse == nil {
		h.Elapse = func(_ *testing.T, d time.Duration) { time.Sleep(d) }
	}
	for _, tc := range []struct {
		name string
		f    func(*testing.T, *suite)
	}{
		{"Create", testCreate},
		{"Abandon", testAbandon},
		{"GetByOwner", testGetByOwner},
		{"Write", testWrite},
		{"WriteRepeated", testWriteRepeated},
		{"WriteGap", testWriteGap},
		{"Fencing", testFencing},
		{"WriteRenewsLease", testWriteRenewsLease},
		{"Progress", testProgress},
		{"Lapse", testLapse},
		{"Complete", testComplete},
		{"Fail", testFail},
		{"Renew", testRenew},
		{"Cancel", testCancel},
		{"CancelRacesCompletion", testCancelRacesCompletion},
		{"Events", testEvents},
		{"Watch", testWatch},
		{"List", testList},
		{"Retention", testRetention},
		{"Transient", testTransient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.f(t, &suite{t: t, h: h, store: h.New(t)})
		})
	}
	runQueue(t, h)
	runAdmin(t, h)
}

// suite is one subtest's store and helpers.
type suite struct {
	t     *testing.T
	h     Harness
	store exporter.Store
}

func (s *suite) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	s.t.Cleanup(cancel)
	return ctx
}

func (s *suite) elapse(d time.Duration) { s.h.Elapse(s.t, d) }

// create records a pending job of owner with a fresh lease.
func (s *suite) create(owner string) (*exporter.Job, exporter.Lease) {
	s.t.Helper()
	lease := exporter.Lease{Token: uuid.NewString(), TTL: leaseTTL}
	job, err := s.store.Create(s.ctx(), &exporter.Job{ID: uuid.NewString(), Owner: owner,
		Status: exporter.StatusPending, ChunkSize: chunkSize, Total: 3 * chunkSize}, lease, retention)
	if err != nil {
		s.t.Fatalf("Create: %v", err)
	}
	return job, lease
}

// running creates a job and begins it.
func (s *suite) running(owner string) (*exporter.Job, exporter.Lease) {
	s.t.Helper()
	job, lease := s.create(owner)
	s.must(s.store.Write(s.ctx(), job.ID, lease, exporter.ChunkWrite{Begin: true}), "Write(Begin)")
	return job, lease
}

func (s *suite) get(id string) *exporter.Job {
	s.t.Helper()
	job, err := s.store.Get(s.ctx(), id, "")
	if err != nil {
		s.t.Fatalf("Get %s: %v", id, err)
	}
	return job
}

func (s *suite) chunks(id string) [][]byte {
	s.t.Helper()
	c, err := s.store.ReadChunks(s.ctx(), id, 0, 100)
	if err != nil {
		s.t.Fatalf("ReadChunks %s: %v", id, err)
	}
	return c
}

func (s *suite) must(err error, what string) {
	s.t.Helper()
	if err != nil {
		s.t.Fatalf("%s: %v", what, err)
	}
}

func (s *suite) is(err, target error, what string) {
	s.t.Helper()
	if !errors.Is(err, target) {
		s.t.Fatalf("%s: got error %v, want one wrapping %v", what, err, target)
	}
}

func (s *suite) status(id string, want exporter.Status) *exporter.Job {
	s.t.Helper()
	job := s.get(id)
	if job.Status != want {
		s.t.Fatalf("job %s is %s (%q), want %s", id, job.Status, job.Error, want)
	}
	return job
}

// sameChunks checks the chunks of a job that is not live: completed, with
// want, or failed or cancelled, with none.
func (s *suite) sameChunks(id string, want ...[]byte) {
	s.t.Helper()
	got := s.chunks(id)
	if len(got) != len(want) {
		s.t.Fatalf("job %s holds %d chunks, want %d", id, len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			s.t.Fatalf("job %s: chunk %d holds %.16q..., want %.16q...", id, i, got[i], want[i])
		}
	}
}

// chunk returns a chunk of n bytes of b.
func chunk(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// write appends chunks at index, with Bytes counting them all.
func write(index int64, chunks ...[]byte) exporter.ChunkWrite {
	var n int64
	for _, c := range chunks {
		n += int64(len(c))
	}
	return exporter.ChunkWrite{Index: index, Chunks: chunks, Bytes: index*chunkSize + n}
}

// complete is the completing write of a job that holds count chunks.
func complete(count int64, bytes int64) exporter.ChunkWrite {
	return exporter.ChunkWrite{Final: exporter.StatusCompleted, Checksum: "sha256:" + fmt.Sprintf("%064x", count),
		Count: count, Bytes: bytes}
}

// Create records job, which is pending, together with lease. It fails if
// the id exists. The store sets CreatedAt, UpdatedAt and ExpiresAt from
// its own clock and returns the job as stored.
func testCreate(t *testing.T, s *suite) {
	before := time.Now()
	job, lease := s.create("alice")
	if job.Status != exporter.StatusPending || job.Owner != "alice" || job.ChunkSize != chunkSize || job.Total != 3*chunkSize {
		t.Fatalf("Create returned %+v", job)
	}
	if job.CreatedAt.IsZero() || job.UpdatedAt.Before(job.CreatedAt) || job.CreatedAt.Before(before.Add(-time.Minute)) {
		t.Fatalf("Create set CreatedAt %v, UpdatedAt %v (the call began at %v)", job.CreatedAt, job.UpdatedAt, before)
	}
	if d := job.ExpiresAt.Sub(job.UpdatedAt); d < retention-time.Second || d > retention+time.Second {
		t.Fatalf("ExpiresAt is %v after UpdatedAt, want the retention %v", d, retention)
	}
	got := s.get(job.ID)
	if got.ID != job.ID || got.Status != exporter.StatusPending || !got.CreatedAt.Equal(job.CreatedAt) {
		t.Fatalf("Get returned %+v, Create %+v", got, job)
	}
	again := *job
	if _, err := s.store.Create(s.ctx(), &again, lease, retention); err == nil {
		t.Fatal("a second Create of the same id succeeded")
	}
	if got := s.get(job.ID); !got.CreatedAt.Equal(job.CreatedAt) {
		t.Fatal("a second Create of the same id changed the job")
	}
	_, err := s.store.Get(s.ctx(), uuid.NewString(), "")
	s.is(err, exporter.ErrNotFound, "Get of an unknown id")
}

// Abandon removes job id if that Create, with lease, recorded it and it
// is still pending, and makes sure that a copy of that Create arriving
// later records nothing. It returns nil whether or not the job had been
// recorded.
func testAbandon(t *testing.T, s *suite) {
	job, lease := s.create("alice")
	other := exporter.Lease{Token: uuid.NewString(), TTL: leaseTTL}
	s.must(s.store.Abandon(s.ctx(), job.ID, other), "Abandon with another lease")
	s.status(job.ID, exporter.StatusPending)
	s.must(s.store.Abandon(s.ctx(), job.ID, lease), "Abandon")
	_, err := s.store.Get(s.ctx(), job.ID, "")
	s.is(err, exporter.ErrNotFound, "Get of an abandoned job")
	late := &exporter.Job{ID: job.ID, Owner: "alice", Status: exporter.StatusPending, ChunkSize: chunkSize}
	_, _ = s.store.Create(s.ctx(), late, lease, retention) // a late copy of the Create
	_, err = s.store.Get(s.ctx(), job.ID, "")
	s.is(err, exporter.ErrNotFound, "Get after a late copy of an abandoned Create")

	// Never recorded: nil, and a later Create with that lease records nothing.
	id := uuid.NewString()
	s.must(s.store.Abandon(s.ctx(), id, lease), "Abandon of a job never recorded")
	_, _ = s.store.Create(s.ctx(), &exporter.Job{ID: id, Owner: "alice", Status: exporter.StatusPending, ChunkSize: chunkSize}, lease, retention)
	_, err = s.store.Get(s.ctx(), id, "")
	s.is(err, exporter.ErrNotFound, "Get after a Create that arrived after its Abandon")

	// A job that began is not pending: Abandon leaves it.
	run, runLease := s.running("alice")
	s.must(s.store.Abandon(s.ctx(), run.ID, runLease), "Abandon of a running job")
	s.status(run.ID, exporter.StatusRunning)
}

// Get returns an error wrapping ErrNotFound if the job (when owner is not
// "") belongs to someone else; Cancel, likewise, and leaves it unchanged.
func testGetByOwner(t *testing.T, s *suite) {
	job, _ := s.running("alice")
	if got, err := s.store.Get(s.ctx(), job.ID, "alice"); err != nil || got.ID != job.ID {
		t.Fatalf("Get by its owner: %v, %v", got, err)
	}
	_, err := s.store.Get(s.ctx(), job.ID, "mallory")
	s.is(err, exporter.ErrNotFound, "Get by another owner")
	_, err = s.store.Cancel(s.ctx(), job.ID, "mallory", "no")
	s.is(err, exporter.ErrNotFound, "Cancel by another owner")
	s.status(job.ID, exporter.StatusRunning)
	_, err = s.store.Get(s.ctx(), "not-an-id", "")
	s.is(err, exporter.ErrNotFound, "Get of a malformed id")
}

// Write with w.Begin moves a pending job to running; it appends w.Chunks
// at w.Index.
func testWrite(t *testing.T, s *suite) {
	job, lease := s.create("alice")
	a, b, c := chunk('a', chunkSize), chunk('b', chunkSize), chunk('c', 10)
	w := write(0, a)
	w.Begin = true
	s.must(s.store.Write(s.ctx(), job.ID, lease, w), "Write(Begin, chunk 0)")
	got := s.status(job.ID, exporter.StatusRunning)
	if got.StartedAt.IsZero() || got.Bytes != chunkSize {
		t.Fatalf("after the first write: StartedAt %v, Bytes %d", got.StartedAt, got.Bytes)
	}
	s.must(s.store.Write(s.ctx(), job.ID, lease, write(1, b, c)), "Write(chunks 1, 2)")
	if got := s.get(job.ID); got.Bytes != 2*chunkSize+10 {
		t.Fatalf("Bytes is %d, want %d", got.Bytes, 2*chunkSize+10)
	}
	s.must(s.store.Write(s.ctx(), job.ID, lease, complete(3, 2*chunkSize+10)), "completing Write")
	s.sameChunks(job.ID, a, b, c)
	part, err := s.store.ReadChunks(s.ctx(), job.ID, 1, 1)
	s.must(err, "ReadChunks(1, 1)")
	if len(part) != 1 || !bytes.Equal(part[0], b) {
		t.Fatalf("ReadChunks(1, 1) returned %d chunks", len(part))
	}
	_, err = s.store.ReadChunks(s.ctx(), uuid.NewString(), 0, 1)
	s.is(err, exporter.ErrNotFound, "ReadChunks of an unknown job")
}

// Chunks that are already stored (a retried write) are not stored again.
// A copy of an earlier Write that arrives late, twice or in part never
// changes what is stored at any index.
func testWriteRepeated(t *testing.T, s *suite) {
	job, lease := s.running("alice")
	a, b, c := chunk('a', chunkSize), chunk('b', chunkSize), chunk('c', chunkSize)
	first := write(0, a, b)
	s.must(s.store.Write(s.ctx(), job.ID, lease, first), "Write(0, 1)")
	s.must(s.store.Write(s.ctx(), job.ID, lease, first), "the same Write again")
	s.must(s.store.Write(s.ctx(), job.ID, lease, write(2, c)), "Write(2)")
	// Late copies of earlier writes, whole and in part.
	_ = s.store.Write(s.ctx(), job.ID, lease, first)
	_ = s.store.Write(s.ctx(), job.ID, lease, write(1, b))
	_ = s.store.Write(s.ctx(), job.ID, lease, write(0, a))
	if got := s.get(job.ID); got.Bytes != 3*chunkSize {
		t.Fatalf("Bytes is %d after late copies, want %d (it never decreases)", got.Bytes, 3*chunkSize)
	}
	s.must(s.store.Write(s.ctx(), job.ID, lease, complete(3, 3*chunkSize)), "completing Write")
	s.sameChunks(job.ID, a, b, c)
	// A completed job's chunks stay as they are under late copies too.
	_ = s.store.Write(s.ctx(), job.ID, lease, write(1, b))
	_ = s.store.Write(s.ctx(), job.ID, lease, complete(3, 3*chunkSize))
	s.sameChunks(job.ID, a, b, c)
}

// Chunks that do not follow the stored ones are an error.
func testWriteGap(t *testing.T, s *suite) {
	job, lease := s.running("alice")
	a := chunk('a', chunkSize)
	s.must(s.store.Write(s.ctx(), job.ID, lease, write(0, a)), "Write(0)")
	if err := s.store.Write(s.ctx(), job.ID, lease, write(2, chunk('c', chunkSize))); err == nil {
		t.Fatal("a write past the next index succeeded")
	}
	s.status(job.ID, exporter.StatusRunning)
	s.must(s.store.Write(s.ctx(), job.ID, lease, complete(1, chunkSize)), "completing Write")
	s.sameChunks(job.ID, a)
}

// A Store must apply a write only while that lease is the job's current
// one and unexpired, and return an error wrapping ErrLeaseLost otherwise:
// a cancelled, finished or lapsed job never takes another byte.
func testFencing(t *testing.T, s *suite) {
	ctx := s.ctx()
	a := chunk('a', chunkSize)
	job, lease := s.running("alice")
	intruder := exporter.Lease{Token: uuid.NewString(), TTL: time.Minute}
	s.is(s.store.Write(ctx, job.ID, intruder, write(0, a)), exporter.ErrLeaseLost, "Write with another token")
	s.is(s.store.Write(ctx, job.ID, intruder, complete(0, 0)), exporter.ErrLeaseLost, "completing Write with another token")
	s.must(s.store.Write(ctx, job.ID, lease, complete(0, 0)), "completing Write of no chunks")
	s.sameChunks(job.ID)

	cancelled, cancelledLease := s.running("alice")
	_, err := s.store.Cancel(ctx, cancelled.ID, "", "stop")
	s.must(err, "Cancel")
	s.is(s.store.Write(ctx, cancelled.ID, cancelledLease, write(0, a)), exporter.ErrLeaseLost, "Write after Cancel")
	s.sameChunks(cancelled.ID)
	s.status(cancelled.ID, exporter.StatusCancelled)

	done, doneLease := s.running("alice")
	s.must(s.store.Write(ctx, done.ID, doneLease, write(0, a)), "Write(0)")
	s.must(s.store.Write(ctx, done.ID, doneLease, complete(1, chunkSize)), "completing Write")
	s.is(s.store.Write(ctx, done.ID, doneLease, write(1, a)), exporter.ErrLeaseLost, "Write after completion")
	s.is(s.store.Write(ctx, done.ID, doneLease, exporter.ChunkWrite{Final: exporter.StatusFailed, Reason: "late", Code: exporter.CodeStore}),
		exporter.ErrLeaseLost, "failing Write after completion")
	s.sameChunks(done.ID, a)
	s.status(done.ID, exporter.StatusCompleted)

	lapsed, lapsedLease := s.running("alice")
	s.elapse(lapse)
	s.is(s.store.Write(ctx, lapsed.ID, lapsedLease, write(0, a)), exporter.ErrLeaseLost, "Write after the lease lapsed")
	s.sameChunks(lapsed.ID)
}

// Write renews lease.
func testWriteRenewsLease(t *testing.T, s *suite) {
	job, lease := s.running("alice")
	for i := range 3 {
		s.elapse(leaseTTL / 2)
		s.must(s.store.Write(s.ctx(), job.ID, lease, write(int64(i), chunk('a', chunkSize))), "Write within the lease")
	}
	s.status(job.ID, exporter.StatusRunning)
}

// A write with Read and no chunks records the progress inside a chunk:
// Job.Read keeps the largest Read given, never less than Bytes; it begins
// a pending job when asked to; it is fenced like any write.
func testProgress(t *testing.T, s *suite) {
	job, lease := s.create("alice")
	if got := s.get(job.ID); got.Read != 0 {
		t.Fatalf("a new job reads Read %d, want 0", got.Read)
	}
	s.must(s.store.Write(s.ctx(), job.ID, lease, exporter.ChunkWrite{Begin: true, Read: 100}), "Write(Read 100)")
	if got := s.status(job.ID, exporter.StatusRunning); got.Read != 100 || got.Bytes != 0 {
		t.Fatalf("after a progress write of 100: Read %d, Bytes %d; want 100, 0", got.Read, got.Bytes)
	}
	s.must(s.store.Write(s.ctx(), job.ID, lease, exporter.ChunkWrite{Read: 40}), "Write(Read 40), late")
	if got := s.get(job.ID); got.Read != 100 {
		t.Fatalf("a late progress write of 40 moved Read from 100 to %d", got.Read)
	}
	s.must(s.store.Write(s.ctx(), job.ID, lease, write(0, chunk('a', chunkSize), chunk('b', chunkSize))), "Write(0, 1)")
	if got := s.get(job.ID); got.Read != 2*chunkSize || got.Bytes != 2*chunkSize {
		t.Fatalf("after two chunks stored: Read %d, Bytes %d; want both %d", got.Read, got.Bytes, 2*chunkSize)
	}
	other := exporter.Lease{Token: "another-token", TTL: leaseTTL}
	if err := s.store.Write(s.ctx(), job.ID, other, exporter.ChunkWrite{Read: 10 * chunkSize}); !errors.Is(err, exporter.ErrLeaseLost) {
		t.Fatalf("a progress write under another lease returned %v, want ErrLeaseLost", err)
	}
	if got := s.get(job.ID); got.Read != 2*chunkSize {
		t.Fatalf("a fenced progress write moved Read to %d", got.Read)
	}
}

// A pending or running job whose lease lapsed is first recorded as failed
// with CodeWorkerLost, so every reader sees the same, final answer.
func testLapse(t *testing.T, s *suite) {
	pending, _ := s.create("alice")
	running, lease := s.running("alice")
	s.must(s.store.Write(s.ctx(), running.ID, lease, write(0, chunk('a', chunkSize))), "Write(0)")
	s.elapse(lapse)
	for _, id := range []string{pending.ID, running.ID} {
		got := s.status(id, exporter.StatusFailed)
		if got.ErrorCode != exporter.CodeWorkerLost || !errors.Is(got.Err(), exporter.ErrWorkerLost) || got.FinishedAt.IsZero() {
			t.Fatalf("a lapsed job reads code %q, Err %v, FinishedAt %v", got.ErrorCode, got.Err(), got.FinishedAt)
		}
		if again := s.get(id); again.Status != exporter.StatusFailed || !again.FinishedAt.Equal(got.FinishedAt) {
			t.Fatalf("a second read of a lapsed job differs: %+v", again)
		}
	}
	s.sameChunks(running.ID) // a failed job's data is removed
	if got := s.get(running.ID); got.Bytes != chunkSize {
		t.Fatalf("Bytes is %d, want %d (not reset when the data is removed)", got.Bytes, chunkSize)
	}
}

// With w.Final it ends the job with that status. Ending a job with the
// status it already has (a retried final write) succeeds.
func testComplete(t *testing.T, s *suite) {
	job, lease := s.running("alice")
	a, b := chunk('a', chunkSize), chunk('b', 7)
	s.must(s.store.Write(s.ctx(), job.ID, lease, write(0, a)), "Write(0)")
	if err := s.store.Write(s.ctx(), job.ID, lease, complete(3, chunkSize)); err == nil {
		t.Fatal("a completion that counts chunks the job does not hold succeeded")
	}
	s.status(job.ID, exporter.StatusRunning)
	w := complete(2, chunkSize+7)
	w.Index, w.Chunks = 1, [][]byte{b}
	s.must(s.store.Write(s.ctx(), job.ID, lease, w), "completing Write with the last chunk")
	got := s.status(job.ID, exporter.StatusCompleted)
	if got.Checksum != w.Checksum || got.Bytes != chunkSize+7 || got.FinishedAt.IsZero() || got.Err() != nil {
		t.Fatalf("completed job reads %+v", got)
	}
	s.sameChunks(job.ID, a, b)
	s.must(s.store.Write(s.ctx(), job.ID, lease, w), "the completing Write repeated")
	s.sameChunks(job.ID, a, b)
	if d := got.ExpiresAt.Sub(got.FinishedAt); d < retention-time.Second {
		t.Fatalf("a completed job expires %v after it finished, want its retention %v", d, retention)
	}
}

// A failing write records the reason and code, and removes the data.
func testFail(t *testing.T, s *suite) {
	job, lease := s.running("alice")
	s.must(s.store.Write(s.ctx(), job.ID, lease, write(0, chunk('a', chunkSize))), "Write(0)")
	w := exporter.ChunkWrite{Final: exporter.StatusFailed, Reason: "export too large: more than MaxBytes", Code: exporter.CodeTooLarge}
	s.must(s.store.Write(s.ctx(), job.ID, lease, w), "failing Write")
	got := s.status(job.ID, exporter.StatusFailed)
	if got.Error != w.Reason || got.ErrorCode != w.Code || !errors.Is(got.Err(), exporter.ErrTooLarge) {
		t.Fatalf("failed job reads Error %q, ErrorCode %q", got.Error, got.ErrorCode)
	}
	s.sameChunks(job.ID)
	s.must(s.store.Write(s.ctx(), job.ID, lease, w), "the failing Write repeated")
	// A pending job can be failed too (a shutdown before it began).
	pending, pl := s.create("alice")
	s.must(s.store.Write(s.ctx(), pending.ID, pl, exporter.ChunkWrite{Final: exporter.StatusFailed,
		Reason: exporter.ErrClosed.Error(), Code: exporter.CodeShutdown}), "failing a pending job")
	s.status(pending.ID, exporter.StatusFailed)
}

// Renew extends the lease of each held job; it returns one error per job,
// in held's order: nil once renewed, one wrapping ErrLeaseLost or
// ErrNotFound when the lease is no longer the job's.
func testRenew(t *testing.T, s *suite) {
	live, liveLease := s.running("alice")
	pending, pendingLease := s.create("bob")
	cancelled, cancelledLease := s.running("alice")
	_, err := s.store.Cancel(s.ctx(), cancelled.ID, "", "stop")
	s.must(err, "Cancel")
	held := []exporter.Held{
		{ID: live.ID, Owner: live.Owner, Lease: liveLease},
		{ID: cancelled.ID, Owner: cancelled.Owner, Lease: cancelledLease},
		{ID: uuid.NewString(), Owner: "alice", Lease: liveLease},
		{ID: pending.ID, Owner: pending.Owner, Lease: pendingLease},
	}
	for range 3 {
		s.elapse(leaseTTL / 2)
		errs := s.store.Renew(s.ctx(), retention, held)
		if len(errs) != len(held) {
			t.Fatalf("Renew returned %d errors for %d jobs", len(errs), len(held))
		}
		s.must(errs[0], "Renew of a running job")
		s.must(errs[3], "Renew of a pending job")
		for _, i := range []int{1, 2} {
			if !errors.Is(errs[i], exporter.ErrLeaseLost) && !errors.Is(errs[i], exporter.ErrNotFound) {
				t.Fatalf("Renew of job %d returned %v, want ErrLeaseLost or ErrNotFound", i, errs[i])
			}
		}
	}
	s.status(live.ID, exporter.StatusRunning)
	s.status(pending.ID, exporter.StatusPending)
	s.status(cancelled.ID, exporter.StatusCancelled)
	if errs := s.store.Renew(s.ctx(), retention, nil); len(errs) != 0 {
		t.Fatalf("Renew of nothing returned %v", errs)
	}
}

// Cancel records the job as cancelled with reason and CodeCancelled,
// removes its data and its lease. A cancelled job is returned as it is
// with a nil error; a completed or failed one is returned unchanged with
// an error wrapping ErrFinished.
func testCancel(t *testing.T, s *suite) {
	ctx := s.ctx()
	job, lease := s.running("alice")
	s.must(s.store.Write(ctx, job.ID, lease, write(0, chunk('a', chunkSize))), "Write(0)")
	got, err := s.store.Cancel(ctx, job.ID, "alice", "export cancelled")
	s.must(err, "Cancel")
	if got.Status != exporter.StatusCancelled || got.Error != "export cancelled" || got.ErrorCode != exporter.CodeCancelled ||
		!errors.Is(got.Err(), exporter.ErrCancelled) || got.FinishedAt.IsZero() {
		t.Fatalf("Cancel returned %+v", got)
	}
	s.sameChunks(job.ID)
	again, err := s.store.Cancel(ctx, job.ID, "", "again")
	s.must(err, "Cancel of a cancelled job")
	if again.Status != exporter.StatusCancelled || again.Error != "export cancelled" || !again.FinishedAt.Equal(got.FinishedAt) {
		t.Fatalf("a second Cancel returned %+v", again)
	}
	pending, _ := s.create("alice")
	_, err = s.store.Cancel(ctx, pending.ID, "", "export cancelled")
	s.must(err, "Cancel of a pending job")
	s.status(pending.ID, exporter.StatusCancelled)

	done, doneLease := s.running("alice")
	s.must(s.store.Write(ctx, done.ID, doneLease, write(0, chunk('a', 3))), "Write(0)")
	s.must(s.store.Write(ctx, done.ID, doneLease, complete(1, 3)), "completing Write")
	got, err = s.store.Cancel(ctx, done.ID, "", "too late")
	s.is(err, exporter.ErrFinished, "Cancel of a completed job")
	if got == nil || got.Status != exporter.StatusCompleted {
		t.Fatalf("Cancel of a completed job returned %+v", got)
	}
	s.sameChunks(done.ID, chunk('a', 3))
	_, err = s.store.Cancel(ctx, uuid.NewString(), "", "x")
	s.is(err, exporter.ErrNotFound, "Cancel of an unknown job")
}

// Cancel is final and atomic against the worker's completion: exactly one
// of them wins, and what is stored agrees with the winner.
func testCancelRacesCompletion(t *testing.T, s *suite) {
	for range 10 {
		job, lease := s.running("alice")
		a := chunk('a', chunkSize)
		s.must(s.store.Write(s.ctx(), job.ID, lease, write(0, a)), "Write(0)")
		var wg sync.WaitGroup
		var cancelErr, completeErr error
		wg.Add(2)
		go func() { defer wg.Done(); _, cancelErr = s.store.Cancel(s.ctx(), job.ID, "", "export cancelled") }()
		go func() { defer wg.Done(); completeErr = s.store.Write(s.ctx(), job.ID, lease, complete(1, chunkSize)) }()
		wg.Wait()
		got := s.get(job.ID)
		switch {
		case cancelErr == nil && errors.Is(completeErr, exporter.ErrLeaseLost):
			if got.Status != exporter.StatusCancelled {
				t.Fatalf("the cancel won but the job reads %s", got.Status)
			}
			s.sameChunks(job.ID)
		case errors.Is(cancelErr, exporter.ErrFinished) && completeErr == nil:
			if got.Status != exporter.StatusCompleted {
				t.Fatalf("the completion won but the job reads %s", got.Status)
			}
			s.sameChunks(job.ID, a)
		default:
			t.Fatalf("cancel returned %v and completion %v: exactly one must win", cancelErr, completeErr)
		}
	}
}

// Subscribe returns the stream of events: jobs reaching a terminal status
// (cancels included), on every instance.
func testEvents(t *testing.T, s *suite) {
	ctx := s.ctx()
	sub, err := s.store.Subscribe(ctx)
	s.must(err, "Subscribe")
	defer sub.Close()
	done, dl := s.running("alice")
	failed, fl := s.running("alice")
	cancelled, _ := s.running("alice")
	s.must(s.store.Write(ctx, done.ID, dl, complete(0, 0)), "completing Write")
	s.must(s.store.Write(ctx, failed.ID, fl, exporter.ChunkWrite{Final: exporter.StatusFailed, Reason: "boom", Code: exporter.CodeSource}), "failing Write")
	_, err = s.store.Cancel(ctx, cancelled.ID, "", "export cancelled")
	s.must(err, "Cancel")
	want := map[string]exporter.Status{done.ID: exporter.StatusCompleted, failed.ID: exporter.StatusFailed, cancelled.ID: exporter.StatusCancelled}
	for len(want) > 0 {
		ev, err := sub.Receive(ctx, 10*time.Second)
		s.must(err, "Receive")
		if ev.ID == "" {
			t.Fatalf("no event within 10 s; still waiting for %v", want)
		}
		if st, ok := want[ev.ID]; ok && ev.Status == st {
			if ev.Job != nil && (ev.Job.ID != ev.ID || ev.Job.Status != st) {
				t.Fatalf("event %s %s carries job %+v", ev.ID, ev.Status, ev.Job)
			}
			if ev.Job != nil && st == exporter.StatusFailed && ev.Job.ErrorCode != exporter.CodeSource {
				t.Fatalf("the failure's event carries code %q", ev.Job.ErrorCode)
			}
			delete(want, ev.ID)
		}
	}
	// Receive with a timeout and nothing to receive returns the zero Event.
	if ev, err := sub.Receive(ctx, 50*time.Millisecond); err != nil || ev.ID != "" {
		t.Fatalf("an idle Receive returned %+v, %v", ev, err)
	}
	// A done ctx ends Receive with ctx's error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := sub.Receive(cctx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Receive with a done ctx returned %v", err)
	}
}

// Watch asks for progress events of job id (Event with a live status,
// after each store write) for ttl.
func testWatch(t *testing.T, s *suite) {
	ctx := s.ctx()
	sub, err := s.store.Subscribe(ctx)
	s.must(err, "Subscribe")
	defer sub.Close()
	job, lease := s.running("alice")
	s.must(s.store.Watch(ctx, job.ID, time.Minute), "Watch")
	s.must(s.store.Write(ctx, job.ID, lease, write(0, chunk('a', chunkSize))), "Write(0)")
	for {
		ev, err := sub.Receive(ctx, 10*time.Second)
		s.must(err, "Receive")
		if ev.ID == "" {
			t.Fatal("no progress event within 10 s of a write to a watched job")
		}
		if ev.ID == job.ID {
			if ev.Status.Terminal() {
				t.Fatalf("progress event with status %s", ev.Status)
			}
			return
		}
	}
}

// List returns up to limit of owner's jobs, newest first, starting after
// cursor ("" for the newest), and the cursor of the next page ("" after
// the last). Jobs that expired are skipped. A cursor the store did not
// hand out is an error wrapping ErrInvalid.
func testList(t *testing.T, s *suite) {
	ctx := s.ctx()
	var ids []string
	for range 7 {
		job, _ := s.create("alice")
		ids = append(ids, job.ID)
		// Apart in time: "newest first" is by the store's clock, and the
		// clocks of a distributed store's nodes agree within milliseconds.
		s.elapse(10 * time.Millisecond)
	}
	s.create("bob")
	var got []*exporter.Job
	cursor, pages := "", 0
	for {
		jobs, next, err := s.store.List(ctx, "alice", cursor, 3)
		s.must(err, "List")
		if len(jobs) > 3 {
			t.Fatalf("List with limit 3 returned %d jobs", len(jobs))
		}
		got = append(got, jobs...)
		pages++
		if next == "" {
			break
		}
		if pages > 10 {
			t.Fatal("List never returned an empty cursor")
		}
		cursor = next
	}
	if pages != 3 || len(got) != 7 {
		t.Fatalf("listed %d jobs in %d pages, want 7 in 3", len(got), pages)
	}
	var listed []string
	for i, j := range got {
		if j.Owner != "alice" {
			t.Fatalf("alice's list holds a job of %q", j.Owner)
		}
		if i > 0 && j.CreatedAt.After(got[i-1].CreatedAt) {
			t.Fatalf("List is not newest first: %v after %v", j.CreatedAt, got[i-1].CreatedAt)
		}
		listed = append(listed, j.ID)
	}
	slices.Sort(listed)
	slices.Sort(ids)
	if !slices.Equal(listed, ids) {
		t.Fatalf("listed %v, created %v", listed, ids)
	}
	if jobs, next, err := s.store.List(ctx, "carol", "", 10); err != nil || len(jobs) != 0 || next != "" {
		t.Fatalf("List of an owner with no jobs: %d jobs, %q, %v", len(jobs), next, err)
	}
	_, _, err := s.store.List(ctx, "alice", "not a cursor", 3)
	s.is(err, exporter.ErrInvalid, "List with a made-up cursor")
}

// Jobs and their data disappear after the retention: Get and ReadChunks
// report ErrNotFound and List skips them.
func testRetention(t *testing.T, s *suite) {
	ctx := s.ctx()
	const short = time.Second
	lease := exporter.Lease{Token: uuid.NewString(), TTL: leaseTTL}
	job, err := s.store.Create(ctx, &exporter.Job{ID: uuid.NewString(), Owner: "alice", Status: exporter.StatusPending,
		ChunkSize: chunkSize}, lease, short)
	s.must(err, "Create")
	w := write(0, chunk('a', 5))
	w.Begin = true
	s.must(s.store.Write(ctx, job.ID, lease, w), "Write(Begin, 0)")
	s.must(s.store.Write(ctx, job.ID, lease, complete(1, 5)), "completing Write")
	s.sameChunks(job.ID, chunk('a', 5))
	s.elapse(short + 500*time.Millisecond)
	_, err = s.store.Get(ctx, job.ID, "")
	s.is(err, exporter.ErrNotFound, "Get after the retention")
	_, err = s.store.ReadChunks(ctx, job.ID, 0, 1)
	s.is(err, exporter.ErrNotFound, "ReadChunks after the retention")
	jobs, _, err := s.store.List(ctx, "alice", "", 10)
	s.must(err, "List")
	for _, j := range jobs {
		if j.ID == job.ID {
			t.Fatal("List returned a job past its retention")
		}
	}
}

// Transient reports whether err may pass if the call is repeated, rather
// than being a final answer: the store's own verdicts are final.
func testTransient(t *testing.T, s *suite) {
	job, lease := s.running("alice")
	_, err := s.store.Cancel(s.ctx(), job.ID, "", "stop")
	s.must(err, "Cancel")
	finals := map[string]error{"a fenced write": s.store.Write(s.ctx(), job.ID, lease, write(0, chunk('a', 1)))}
	_, finals["a Get of an unknown id"] = s.store.Get(s.ctx(), uuid.NewString(), "")
	_, _, finals["a List with a bad cursor"] = s.store.List(s.ctx(), "alice", "x", 1)
	for what, err := range finals {
		if err == nil {
			t.Fatalf("%s succeeded", what)
		}
		if s.store.Transient(err) {
			t.Fatalf("Transient(%v) of %s is true: a verdict is final", err, what)
		}
	}
}
