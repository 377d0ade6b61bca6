package storetest

import (
	"testing"
	"time"

	"github.com/exporterkit/exporter"
	"github.com/google/uuid"
)

// runQueue runs the subtests of the Queue ability, for a store that has
// it.
func runQueue(t *testing.T, h Harness) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T, *suite, exporter.Queue)
	}{
		{"QueueClaim", testQueueClaim},
		{"QueueRelease", testQueueRelease},
		{"QueueAttempts", testQueueAttempts},
		{"QueueRecover", testQueueRecover},
		{"QueueLostAttemptsCount", testQueueLostAttemptsCount},
		{"QueueCancel", testQueueCancel},
		{"QueueTurns", testQueueTurns},
		{"QueueMaxPerUser", testQueueMaxPerUser},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &suite{t: t, h: h, store: h.New(t)}
			q, ok := s.store.(exporter.Queue)
			if !ok {
				t.Skip("the store does not implement Queue")
			}
			tc.f(t, s, q)
		})
	}
}

// enqueue records a durable export of kind "k" for owner.
func (s *suite) enqueue(q exporter.Queue, owner string, attempts int) *exporter.Job {
	s.t.Helper()
	job, err := q.Enqueue(s.ctx(), &exporter.Job{ID: uuid.NewString(), Owner: owner, Status: exporter.StatusPending,
		ChunkSize: chunkSize, Kind: "k", Args: []byte("args")}, uuid.NewString(), attempts, retention)
	if err != nil {
		s.t.Fatalf("Enqueue: %v", err)
	}
	return job
}

func leases(n int) []exporter.Lease {
	l := make([]exporter.Lease, n)
	for i := range l {
		l[i] = exporter.Lease{Token: uuid.NewString(), TTL: leaseTTL}
	}
	return l
}

// claim claims up to n exports of kind "k".
func (s *suite) claim(q exporter.Queue, n, maxPerUser int) []*exporter.Claim {
	s.t.Helper()
	c, err := q.Claim(s.ctx(), []string{"k"}, maxPerUser, leases(n))
	if err != nil {
		s.t.Fatalf("Claim: %v", err)
	}
	return c
}

// Enqueue records a pending durable export; Claim begins its attempt
// under a lease, once; the attempt's writes carry the hash state, which
// the next attempt's claim returns.
func testQueueClaim(t *testing.T, s *suite, q exporter.Queue) {
	job := s.enqueue(q, "alice", 3)
	if job.Status != exporter.StatusPending || job.Kind != "k" || string(job.Args) != "args" || job.Attempt != 0 {
		t.Fatalf("Enqueue returned %+v", job)
	}
	if c, err := q.Claim(s.ctx(), []string{"other"}, 0, leases(1)); err != nil || len(c) != 0 {
		t.Fatalf("a claim of another kind took %d exports (%v)", len(c), err)
	}
	c := s.claim(q, 2, 0)
	if len(c) != 1 || c[0].Job.ID != job.ID || c[0].Job.Status != exporter.StatusRunning || c[0].Job.Attempt != 1 ||
		c[0].Chunks != 0 || c[0].Hash != nil || c[0].Left != 2 {
		t.Fatalf("Claim returned %d claims: %+v", len(c), c)
	}
	if again := s.claim(q, 1, 0); len(again) != 0 {
		t.Fatal("an export was claimed twice")
	}
	w := write(0, chunk('a', chunkSize))
	w.Hash = []byte("state after chunk 0")
	s.must(s.store.Write(s.ctx(), job.ID, c[0].Lease, w), "Write with the claim's lease")
	s.must(q.Release(s.ctx(), c[0].Job, c[0].Lease, nil, 0), "Release (hand back)")
	s.is(s.store.Write(s.ctx(), job.ID, c[0].Lease, write(1, chunk('b', chunkSize))), exporter.ErrLeaseLost, "Write after Release")
	s.status(job.ID, exporter.StatusRunning)
	next := s.claim(q, 1, 0)
	if len(next) != 1 || next[0].Chunks != 1 || string(next[0].Hash) != "state after chunk 0" || next[0].Job.Bytes != chunkSize ||
		next[0].Job.Attempt != 2 || next[0].Left != 2 {
		t.Fatalf("the resuming claim returned %+v", next)
	}
	s.is(s.store.Write(s.ctx(), job.ID, c[0].Lease, write(1, chunk('b', chunkSize))), exporter.ErrLeaseLost, "Write with the old attempt's lease")
}

// Release with a retry counts the attempt and queues the export after the
// delay; a hand-back does not count.
func testQueueRelease(t *testing.T, s *suite, q exporter.Queue) {
	job := s.enqueue(q, "alice", 2)
	c := s.claim(q, 1, 0)
	s.must(q.Release(s.ctx(), c[0].Job, c[0].Lease, &exporter.Reason{Text: "timeout", Code: exporter.CodeSource}, time.Hour), "Release (retry)")
	if got := s.claim(q, 1, 0); len(got) != 0 {
		t.Fatal("an export was claimed before its retry's delay")
	}
	s.is(q.Release(s.ctx(), c[0].Job, c[0].Lease, nil, 0), exporter.ErrLeaseLost, "a second Release")
	got := s.status(job.ID, exporter.StatusRunning)
	if got.Error != "" {
		t.Fatalf("a job between attempts reads error %q", got.Error)
	}
}

// An export whose every attempt began fails with its last attempt's
// error, and is not claimed.
func testQueueAttempts(t *testing.T, s *suite, q exporter.Queue) {
	job := s.enqueue(q, "alice", 1)
	c := s.claim(q, 1, 0)
	if c[0].Left != 0 {
		t.Fatalf("Left is %d with MaxAttempts 1", c[0].Left)
	}
	s.must(q.Release(s.ctx(), c[0].Job, c[0].Lease, &exporter.Reason{Text: "timeout", Code: exporter.CodeSource}, 0), "Release (retry)")
	if got := s.claim(q, 1, 0); len(got) != 0 {
		t.Fatal("an export whose attempts are spent was claimed")
	}
	got := s.status(job.ID, exporter.StatusFailed)
	if got.Error != "timeout" || got.ErrorCode != exporter.CodeSource {
		t.Fatalf("failed with %q (%s), want the last attempt's error", got.Error, got.ErrorCode)
	}
}

// An attempt whose lease lapses is found by Recover and queued again: the
// export reads running meanwhile, and the next claim resumes it.
func testQueueRecover(t *testing.T, s *suite, q exporter.Queue) {
	job := s.enqueue(q, "alice", 3)
	c := s.claim(q, 1, 0)
	s.elapse(lapse)
	s.status(job.ID, exporter.StatusRunning) // a read changes nothing
	var queued int
	for range 20 { // Recover takes a check when it is due: give it a few tries
		n, err := q.Recover(s.ctx())
		s.must(err, "Recover")
		if queued += n; queued > 0 {
			break
		}
		s.elapse(100 * time.Millisecond)
	}
	if queued != 1 {
		t.Fatalf("Recover queued %d exports, want 1", queued)
	}
	next := s.claim(q, 1, 0)
	if len(next) != 1 || next[0].Job.ID != job.ID || next[0].Job.Attempt != 2 || next[0].Left != 1 {
		t.Fatalf("the claim after Recover returned %+v", next)
	}
	s.is(s.store.Write(s.ctx(), job.ID, c[0].Lease, write(0, chunk('a', 1))), exporter.ErrLeaseLost, "Write of the lapsed attempt")
	if n, err := q.Recover(s.ctx()); err != nil || n != 0 {
		t.Fatalf("Recover of a held attempt queued %d (%v)", n, err)
	}
}

// recoverLapsed lets the attempt's lease lapse and runs Recover until it
// queues the export again.
func (s *suite) recoverLapsed(q exporter.Queue) {
	s.t.Helper()
	s.elapse(lapse)
	for range 20 {
		n, err := q.Recover(s.ctx())
		s.must(err, "Recover")
		if n > 0 {
			return
		}
		s.elapse(100 * time.Millisecond)
	}
	s.t.Fatal("Recover never queued the lapsed attempt")
}

// Attempts lost with their instance count toward the export's attempts:
// an export that kills its worker every time fails, as worker lost,
// rather than loop.
func testQueueLostAttemptsCount(t *testing.T, s *suite, q exporter.Queue) {
	job := s.enqueue(q, "alice", 2)
	for attempt := 1; attempt <= 2; attempt++ {
		c := s.claim(q, 1, 0)
		if len(c) != 1 || c[0].Job.Attempt != attempt {
			t.Fatalf("claim of attempt %d returned %+v", attempt, c)
		}
		s.recoverLapsed(q)
	}
	if c := s.claim(q, 1, 0); len(c) != 0 {
		t.Fatal("an export whose attempts were all lost was claimed a third time")
	}
	got := s.status(job.ID, exporter.StatusFailed)
	if got.ErrorCode != exporter.CodeWorkerLost {
		t.Fatalf("failed with code %q, want %q", got.ErrorCode, exporter.CodeWorkerLost)
	}
}

// Cancel is final in every state: a queued export is never claimed, and
// one between attempts never resumed.
func testQueueCancel(t *testing.T, s *suite, q exporter.Queue) {
	queued := s.enqueue(q, "alice", 3)
	_, err := s.store.Cancel(s.ctx(), queued.ID, "", "export cancelled")
	s.must(err, "Cancel of a queued export")
	if got := s.claim(q, 1, 0); len(got) != 0 {
		t.Fatal("a cancelled queued export was claimed")
	}
	between := s.enqueue(q, "alice", 3)
	c := s.claim(q, 1, 0)
	s.must(q.Release(s.ctx(), c[0].Job, c[0].Lease, &exporter.Reason{Text: "x", Code: exporter.CodeSource}, 0), "Release")
	_, err = s.store.Cancel(s.ctx(), between.ID, "", "export cancelled")
	s.must(err, "Cancel between attempts")
	if got := s.claim(q, 1, 0); len(got) != 0 {
		t.Fatal("an export cancelled between attempts was claimed")
	}
	s.status(between.ID, exporter.StatusCancelled)
}

// Owners with work take turns: one owner's many queued exports do not
// come before another's one.
func testQueueTurns(t *testing.T, s *suite, q exporter.Queue) {
	for range 20 {
		s.enqueue(q, "alice", 3)
	}
	bob := s.enqueue(q, "bob", 3)
	var at = -1
	for i := range 21 {
		c := s.claim(q, 1, 0)
		if len(c) != 1 {
			t.Fatalf("claim %d took %d exports", i, len(c))
		}
		if c[0].Job.ID == bob.ID {
			at = i
			break
		}
	}
	// Owners in one queue shard alternate; across shards claims rotate,
	// so bob's comes within a round of them.
	if at < 0 || at > 17 {
		t.Fatalf("bob's export was claimed %d-th, after alice's", at+1)
	}
}

// maxPerUser caps an owner's running attempts; Settle frees a place.
func testQueueMaxPerUser(t *testing.T, s *suite, q exporter.Queue) {
	for range 4 {
		s.enqueue(q, "alice", 3)
	}
	c := s.claim(q, 4, 2)
	if len(c) != 2 {
		t.Fatalf("a claim with maxPerUser 2 took %d of one owner's exports", len(c))
	}
	if more := s.claim(q, 2, 2); len(more) != 0 {
		t.Fatalf("%d more were claimed at the cap", len(more))
	}
	s.must(s.store.Write(s.ctx(), c[0].Job.ID, c[0].Lease, complete(0, 0)), "completing Write")
	s.must(q.Settle(s.ctx(), c[0].Job), "Settle")
	more := s.claim(q, 2, 2)
	if len(more) != 1 {
		t.Fatalf("after a Settle, a claim took %d, want 1", len(more))
	}
}
