package exporter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// pattern is the deterministic content of a durable test export: the byte
// at position p of export seed. A source can start at any offset.
func pattern(seed byte, p int64) byte { return byte(p*31+p>>9) ^ seed }

// patternBytes returns bytes [from, to) of export seed.
func patternBytes(seed byte, from, to int64) []byte {
	b := make([]byte, to-from)
	for i := range b {
		b[i] = pattern(seed, from+int64(i))
	}
	return b
}

// patternSum is the checksum of the first n bytes of export seed.
func patternSum(seed byte, n int64) string {
	s := sha256.Sum256(patternBytes(seed, 0, n))
	return "sha256:" + hex.EncodeToString(s[:])
}

// patternReader reads export seed from offset to size; after failAt bytes
// (absolute, when > 0) it fails with err. It counts Close calls.
type patternReader struct {
	seed      byte
	off, size int64
	failAt    int64
	err       error
	closes    *atomic.Int32
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.failAt > 0 && r.off >= r.failAt {
		return 0, r.err
	}
	if r.off >= r.size {
		return 0, io.EOF
	}
	end := min(r.size, r.off+int64(len(p)))
	if r.failAt > 0 {
		end = min(end, r.failAt)
	}
	n := copy(p, patternBytes(r.seed, r.off, end))
	r.off += int64(n)
	return n, nil
}

func (r *patternReader) Close() error {
	if r.closes != nil {
		r.closes.Add(1)
	}
	return nil
}

// durableArgs are the test kinds' args: the export's seed and size.
func durableArgs(seed byte, size int64) []byte { return []byte(fmt.Sprintf("%d %d", seed, size)) }

func parseDurableArgs(t *testing.T, args []byte) (byte, int64) {
	var seed byte
	var size int64
	_, err := fmt.Sscanf(string(args), "%d %d", &seed, &size)
	require.NoError(t, err)
	return seed, size
}

// sourceCalls records the calls of a test Source.
type sourceCalls struct {
	mu      sync.Mutex
	offsets map[string][]int64 // by job id
	closes  atomic.Int32
}

func (c *sourceCalls) record(id string, off int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.offsets == nil {
		c.offsets = map[string][]int64{}
	}
	c.offsets[id] = append(c.offsets[id], off)
	return len(c.offsets[id])
}

func (c *sourceCalls) of(id string) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int64(nil), c.offsets[id]...)
}

// seekingSource starts at the offset itself; on the attempts listed in
// fail (1-based), its reader fails with errFail after failAfter bytes of
// the attempt.
func seekingSource(t *testing.T, calls *sourceCalls, fail map[int]error, failAfter int64) Source {
	return func(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
		n := calls.record(job.ID, offset)
		seed, size := parseDurableArgs(t, job.Args)
		r := &patternReader{seed: seed, off: offset, size: size, closes: &calls.closes}
		if err := fail[n]; err != nil {
			r.failAt, r.err = offset+failAfter, err
		}
		return r, nil
	}
}

// skippingSource always starts at 0 and skips to the offset with
// SkipReader, as a source that cannot seek does.
func skippingSource(t *testing.T, calls *sourceCalls, fail map[int]error, failAfter int64) Source {
	return func(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
		n := calls.record(job.ID, offset)
		seed, size := parseDurableArgs(t, job.Args)
		r := &patternReader{seed: seed, size: size, closes: &calls.closes}
		if err := fail[n]; err != nil {
			r.failAt, r.err = offset+failAfter, err
		}
		return SkipReader(r, offset)
	}
}

// requireDurableDone checks a completed durable export: its bytes and
// checksum are those of an uninterrupted run.
func requireDurableDone(t *testing.T, x *Exporter, user User, job *Job, seed byte, size int64) *Job {
	t.Helper()
	got := waitFor(t, x, user, job.ID, StatusCompleted)
	require.Equal(t, size, got.Bytes)
	require.Equal(t, patternSum(seed, size), got.Checksum)
	d, err := x.OpenExport(testCtx(t), user, job.ID)
	require.NoError(t, err)
	defer d.Close()
	var buf bytes.Buffer
	_, err = io.Copy(&buf, d)
	require.NoError(t, err)
	require.True(t, bytes.Equal(patternBytes(seed, 0, size), buf.Bytes()), "the stored bytes differ from the source's")
	return got
}

// TestDurableExport: an enqueued export runs on an Exporter with its kind,
// and reads as any other export; its kind, args and attempt are recorded.
func TestDurableExport(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		calls := &sourceCalls{}
		cfg := Config{ChunkSize: testChunk, Sources: map[string]Source{"rows": seekingSource(t, calls, nil, 0)}}
		x := e.exporter(t, cfg)
		ctx := testCtx(t)
		const size = 5*testChunk + 17
		job, err := x.Enqueue(ctx, alice, "rows", durableArgs(7, size), WithMetadata(map[string]string{"filename": "rows.csv"}))
		require.NoError(t, err)
		require.Equal(t, StatusPending, job.Status)
		require.Equal(t, "rows", job.Kind)
		require.Equal(t, 0, job.Attempt)
		got := requireDurableDone(t, x, alice, job, 7, size)
		require.Equal(t, 1, got.Attempt)
		require.Equal(t, durableArgs(7, size), got.Args)
		require.Equal(t, "rows.csv", got.Metadata["filename"])
		require.Equal(t, []int64{0}, calls.of(job.ID))
		require.Eventually(t, func() bool { return calls.closes.Load() == 1 }, 5*time.Second, time.Millisecond)
		list, err := x.ListExports(ctx, alice, ListOptions{})
		require.NoError(t, err)
		require.Len(t, list.Jobs, 1)
		require.Equal(t, "rows", list.Jobs[0].Kind)

		_, err = x.Enqueue(ctx, alice, "nope", nil)
		require.ErrorIs(t, err, ErrInvalid)
		_, err = x.Enqueue(ctx, alice, "rows", make([]byte, MaxArgs+1))
		require.ErrorIs(t, err, ErrInvalid)
		_, err = x.Enqueue(ctx, nobody, "rows", nil)
		require.ErrorIs(t, err, ErrForbidden)
		// A user without the permission learns nothing of the kinds.
		_, err = x.Enqueue(ctx, nobody, "nope", make([]byte, MaxArgs+1))
		require.ErrorIs(t, err, ErrForbidden)
		require.NotErrorIs(t, err, ErrInvalid)
		// An unknown kind's name is quoted, never echoed whole.
		_, err = x.Enqueue(ctx, alice, strings.Repeat("k", 10000), nil)
		require.ErrorIs(t, err, ErrInvalid)
		require.Less(t, len(err.Error()), 300)
		e.requireTTLs(t)

		require.NoError(t, x.Shutdown(ctx))
		_, err = x.Enqueue(ctx, alice, "rows", durableArgs(1, 1))
		require.ErrorIs(t, err, ErrClosed, "Enqueue after Shutdown")
	})
}

// TestDurableResume: an attempt whose source fails is retried, and the
// next attempt resumes at the offset that was stored, with the hash's
// state: the export ends with the bytes and checksum of an uninterrupted
// run. Both a source that seeks and one that skips.
func TestDurableResume(t *testing.T) {
	for _, kind := range []string{"seeking", "skipping"} {
		t.Run(kind, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, e *env) {
				calls := &sourceCalls{}
				boom := errors.New("database connection reset")
				fail := map[int]error{1: boom}
				src := seekingSource(t, calls, fail, 3*testChunk+100)
				if kind == "skipping" {
					src = skippingSource(t, calls, fail, 3*testChunk+100)
				}
				x := e.exporter(t, Config{ChunkSize: testChunk, Sources: map[string]Source{"rows": src}})
				const size = 8*testChunk + 5
				job, err := x.Enqueue(testCtx(t), alice, "rows", durableArgs(3, size))
				require.NoError(t, err)
				got := requireDurableDone(t, x, alice, job, 3, size)
				require.Equal(t, 2, got.Attempt)
				offsets := calls.of(job.ID)
				require.Len(t, offsets, 2)
				require.Equal(t, int64(0), offsets[0])
				// The first attempt stored whole chunks before it failed.
				require.Positive(t, offsets[1])
				require.LessOrEqual(t, offsets[1], int64(3*testChunk))
				require.Zero(t, offsets[1]%testChunk)
			})
		})
	}
}

// TestDurablePermanent: an error wrapping ErrPermanent fails the export at
// once; errors that are not exhaust MaxAttempts, and the export fails with
// the last attempt's error.
func TestDurablePermanent(t *testing.T) {
	e := newEnv(t, "miniredis")
	calls := &sourceCalls{}
	bad := fmt.Errorf("%w: no such table", ErrPermanent)
	flaky := errors.New("timeout")
	src := func(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
		n := calls.record(job.ID, offset)
		if string(job.Args) == "bad" {
			return nil, bad
		}
		return nil, fmt.Errorf("attempt %d: %w", n, flaky)
	}
	x := e.exporter(t, Config{ChunkSize: testChunk, MaxAttempts: 2, Sources: map[string]Source{"rows": src}})
	ctx := testCtx(t)
	job, err := x.Enqueue(ctx, alice, "rows", []byte("bad"))
	require.NoError(t, err)
	got := waitFor(t, x, alice, job.ID, StatusFailed)
	require.Equal(t, 1, got.Attempt)
	require.Equal(t, CodeSource, got.ErrorCode)
	require.Contains(t, got.Error, "no such table")
	require.Len(t, calls.of(job.ID), 1)

	job, err = x.Enqueue(ctx, alice, "rows", []byte("flaky"))
	require.NoError(t, err)
	got = waitFor(t, x, alice, job.ID, StatusFailed)
	require.Equal(t, 2, got.Attempt)
	require.Equal(t, "attempt 2: timeout", got.Error)
	require.Len(t, calls.of(job.ID), 2)
	e.requireTTLs(t)
}

// TestDurableCancel: a cancel is final whether the export is queued (it
// never runs) or running (its source is closed).
func TestDurableCancel(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		calls := &sourceCalls{}
		release := make(chan struct{})
		src := func(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
			calls.record(job.ID, offset)
			return &gateReader2{gate: release, ctx: ctx}, nil
		}
		x := e.exporter(t, Config{ChunkSize: testChunk, MaxRunning: 1, Sources: map[string]Source{"rows": src}})
		ctx := testCtx(t)
		running, err := x.Enqueue(ctx, alice, "rows", nil)
		require.NoError(t, err)
		waitStatus(t, x, alice, running.ID, StatusRunning)
		queued, err := x.Enqueue(ctx, alice, "rows", nil)
		require.NoError(t, err)
		_, err = x.CancelExport(ctx, alice, queued.ID)
		require.NoError(t, err)
		_, err = x.CancelExport(ctx, alice, running.ID)
		require.NoError(t, err)
		third, err := x.Enqueue(ctx, alice, "rows", durableArgs(1, 10))
		require.NoError(t, err)
		close(release)
		waitFor(t, x, alice, third.ID, StatusCompleted)
		require.Empty(t, calls.of(queued.ID), "a cancelled queued export ran")
		require.Equal(t, StatusCancelled, waitFor(t, x, alice, running.ID, StatusCancelled).Status)
	})
}

// gateReader2 returns EOF once gate is closed, or fails when its ctx ends.
type gateReader2 struct {
	gate chan struct{}
	ctx  context.Context
	done bool
}

func (r *gateReader2) Read(p []byte) (int, error) {
	if r.done {
		return 0, io.EOF
	}
	select {
	case <-r.gate:
		r.done = true
		return copy(p, "x"), nil
	case <-r.ctx.Done():
		return 0, context.Cause(r.ctx)
	}
}

// TestDurableHandBack: Shutdown hands its running durable exports back
// instead of failing them; another instance resumes them from where they
// stopped, and the hand-back does not count toward MaxAttempts.
func TestDurableHandBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		calls := &sourceCalls{}
		const size = 6 * testChunk
		stall := make(chan struct{})
		// Attempt 1 stalls after 2 chunks, until its context ends.
		src := func(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
			n := calls.record(job.ID, offset)
			r := &patternReader{seed: 9, off: offset, size: size}
			if n == 1 {
				return io.MultiReader(io.LimitReader(r, 2*testChunk), &gateReader2{gate: stall, ctx: ctx}), nil
			}
			return r, nil
		}
		cfg := Config{ChunkSize: testChunk, MaxAttempts: 1, Sources: map[string]Source{"rows": src}}
		a, err := New(NewRedisStore(e.newClient(t)).WithPrefix(e.prefix), cfg)
		require.NoError(t, err)
		job, err := a.Enqueue(testCtx(t), alice, "rows", nil)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			j, err := a.GetExportStatus(testCtx(t), alice, job.ID)
			return err == nil && j.Bytes == 2*testChunk
		}, 10*time.Second, time.Millisecond)
		sctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		require.ErrorIs(t, a.Shutdown(sctx), context.DeadlineExceeded)
		j, err := a.GetExportStatus(testCtx(t), alice, job.ID)
		require.NoError(t, err)
		require.Equal(t, StatusRunning, j.Status, "a handed-back export stays running")

		b := e.secondExporter(t, cfg)
		got := waitFor(t, b, alice, job.ID, StatusCompleted)
		require.Equal(t, patternSum(9, size), got.Checksum)
		require.Equal(t, 2, got.Attempt, "MaxAttempts 1: the hand-back did not count")
		require.Equal(t, []int64{0, 2 * testChunk}, calls.of(job.ID))
	})
}

// TestDurableLapse: an attempt whose instance stops renewing its lease
// (here: its renewals fail; the fault tests kill a real process) is
// resumed by another instance within LeaseTTL and a second, without
// anyone reading the job, and a read meanwhile shows it running. (Real
// servers only: miniredis expires keys only when told to.)
func TestDurableLapse(t *testing.T) {
	for _, name := range []string{"redis", "cluster"} {
		t.Run(name, func(t *testing.T) { testDurableLapse(t, newEnv(t, name)) })
	}
}

func testDurableLapse(t *testing.T, e *env) {
	{
		calls := &sourceCalls{}
		const size = 4 * testChunk
		stall := make(chan struct{})
		defer close(stall)
		src := func(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
			n := calls.record(job.ID, offset)
			r := &patternReader{seed: 5, off: offset, size: size}
			if n == 1 { // the first attempt stalls for good after a chunk
				return io.MultiReader(io.LimitReader(r, testChunk), &gateReader2{gate: stall, ctx: context.Background()}), nil
			}
			return r, nil
		}
		const lease = 500 * time.Millisecond
		cfg := Config{ChunkSize: testChunk, LeaseTTL: lease, Sources: map[string]Source{"rows": src}}
		failing := &lapsingStore{RedisStore: NewRedisStore(e.newClient(t)).WithPrefix(e.prefix)}
		a := e.exporterOn(t, failing, cfg)
		job, err := a.Enqueue(testCtx(t), alice, "rows", nil)
		require.NoError(t, err)
		require.Eventually(t, func() bool { return len(calls.of(job.ID)) == 1 }, 10*time.Second, time.Millisecond)
		require.Eventually(t, func() bool {
			j, err := a.GetExportStatus(testCtx(t), alice, job.ID)
			return err == nil && j.Bytes == testChunk
		}, 10*time.Second, time.Millisecond)
		failing.fail.Store(true) // a's leases lapse from now on
		lapsedAt := time.Now()
		time.Sleep(lease) // the lease lapses: a read now shows the export running, not failed
		j, err := a.GetExportStatus(testCtx(t), alice, job.ID)
		require.NoError(t, err)
		require.Equal(t, StatusRunning, j.Status)
		b := e.secondExporter(t, Config{ChunkSize: testChunk, LeaseTTL: lease, Sources: map[string]Source{"rows": src}})
		_ = b
		require.Eventually(t, func() bool { return len(calls.of(job.ID)) == 2 }, 10*time.Second, time.Millisecond)
		took := time.Since(lapsedAt)
		t.Logf("resumed %v after the last renewal could pass", took)
		require.Less(t, took, lease+time.Second+lease/3)
		got := waitFor(t, b, alice, job.ID, StatusCompleted)
		require.Equal(t, patternSum(5, size), got.Checksum)
		require.Equal(t, 2, got.Attempt)
		require.Equal(t, []int64{0, testChunk}, calls.of(job.ID))
	}
}

// lapsingStore is a RedisStore whose renewals fail, and whose claims find
// nothing, once fail is set: its instance's leases lapse as if it had
// died, and it takes no part in the resume.
type lapsingStore struct {
	*RedisStore
	fail atomic.Bool
}

func (s *lapsingStore) Renew(ctx context.Context, retention time.Duration, held []Held) []error {
	if !s.fail.Load() {
		return s.RedisStore.Renew(ctx, retention, held)
	}
	errs := make([]error, len(held))
	for i := range errs {
		errs[i] = io.ErrUnexpectedEOF
	}
	return errs
}

func (s *lapsingStore) Claim(ctx context.Context, kinds []string, maxPerUser int, leases []Lease) ([]*Claim, error) {
	if s.fail.Load() {
		return nil, nil
	}
	return s.RedisStore.Claim(ctx, kinds, maxPerUser, leases)
}

// TestDurableFairness: one user's 500 queued exports do not starve
// another's one: with MaxRunning 2, the second user's export is among the
// first claimed after it is enqueued (owners take turns in a shard, and
// claims rotate over the shards).
func TestDurableFairness(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		var mu sync.Mutex
		var order []string
		gate := make(chan struct{})
		src := func(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
			mu.Lock()
			order = append(order, job.Owner)
			mu.Unlock()
			<-gate // the first claims wait until everything is queued
			return bytes.NewReader([]byte("x")), nil
		}
		x := e.exporter(t, Config{ChunkSize: testChunk, MaxRunning: 2, Sources: map[string]Source{"rows": src}})
		ctx := testCtx(t)
		for range 500 {
			_, err := x.Enqueue(ctx, alice, "rows", nil)
			require.NoError(t, err)
		}
		last, err := x.Enqueue(ctx, bob, "rows", nil)
		require.NoError(t, err)
		close(gate)
		waitFor(t, x, bob, last.ID, StatusCompleted)
		mu.Lock()
		defer mu.Unlock()
		at := slices.Index(order, bob.ID)
		t.Logf("bob's export was claimed %d-th, after %d of alice's", at+1, at)
		require.GreaterOrEqual(t, at, 0)
		require.Less(t, at, 2+queueShards, "bob waited behind alice's queue")
	})
}

// TestDurableMaxPerUser: MaxPerUser caps a user's running durable exports
// on all instances together, as the Sources count them, while another
// user's run beside them; it never refuses Enqueue.
func TestDurableMaxPerUser(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		var mu sync.Mutex
		running, most := map[string]int{}, map[string]int{}
		src := func(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
			mu.Lock()
			running[job.Owner]++
			most[job.Owner] = max(most[job.Owner], running[job.Owner])
			mu.Unlock()
			return &doneReader{r: bytes.NewReader(make([]byte, 3*testChunk)), done: func() {
				mu.Lock()
				running[job.Owner]--
				mu.Unlock()
			}, pace: 20 * time.Millisecond}, nil
		}
		cfg := Config{ChunkSize: testChunk, MaxRunning: 8, MaxPerUser: 2, Sources: map[string]Source{"rows": src}}
		xs := []*Exporter{e.exporter(t, cfg), e.secondExporter(t, cfg), e.secondExporter(t, cfg)}
		ctx := testCtx(t)
		var ids []string
		for i := range 12 {
			job, err := xs[i%3].Enqueue(ctx, alice, "rows", nil)
			require.NoError(t, err, "MaxPerUser never refuses Enqueue")
			ids = append(ids, job.ID)
		}
		other, err := xs[0].Enqueue(ctx, bob, "rows", nil)
		require.NoError(t, err)
		for _, id := range ids {
			waitFor(t, xs[0], alice, id, StatusCompleted)
		}
		waitFor(t, xs[0], bob, other.ID, StatusCompleted)
		mu.Lock()
		defer mu.Unlock()
		t.Logf("most running at once: %v", most)
		require.Equal(t, 2, most[alice.ID], "alice ran more than MaxPerUser at once, or never reached it")
		e.requireTTLs(t)
	})
}

// doneReader reads r a chunk per pace and calls done once, at EOF or
// Close.
type doneReader struct {
	r    io.Reader
	done func()
	once sync.Once
	pace time.Duration
}

func (d *doneReader) Read(p []byte) (int, error) {
	time.Sleep(d.pace) // the pace of the source under test
	n, err := d.r.Read(p[:min(len(p), testChunk)])
	if err != nil {
		d.once.Do(d.done)
	}
	return n, err
}

func (d *doneReader) Close() error {
	d.once.Do(d.done)
	return nil
}

// gatedClaims is a RedisStore whose claims, once one took an export,
// wait until gate is closed.
type gatedClaims struct {
	*RedisStore
	gate chan struct{}
	took atomic.Bool
}

func (g *gatedClaims) Claim(ctx context.Context, kinds []string, maxPerUser int, leases []Lease) ([]*Claim, error) {
	if g.took.Load() {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	claims, err := g.RedisStore.Claim(ctx, kinds, maxPerUser, leases)
	if len(claims) > 0 {
		g.took.Store(true)
	}
	return claims, err
}

// TestDurableCancelBetweenAttempts: an export cancelled while it waits
// for its retry is never resumed.
func TestDurableCancelBetweenAttempts(t *testing.T) {
	e := newEnv(t, "miniredis")
	calls := &sourceCalls{}
	src := func(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
		calls.record(job.ID, offset)
		return nil, errors.New("flaky")
	}
	// Claims after the first wait for the cancel, however slow the test
	// runs: the retry cannot begin before it.
	gated := &gatedClaims{RedisStore: e.store, gate: make(chan struct{})}
	x := e.exporterOn(t, gated, Config{ChunkSize: testChunk, Sources: map[string]Source{"rows": src}})
	ctx := testCtx(t)
	job, err := x.Enqueue(ctx, alice, "rows", nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(calls.of(job.ID)) == 1 }, 10*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { // its attempt was released: it waits for the retry
		j, err := x.GetExportStatus(ctx, alice, job.ID)
		return err == nil && j.Status == StatusRunning && x.sched.left() == 0
	}, 10*time.Second, time.Millisecond)
	got, err := x.CancelExport(ctx, alice, job.ID)
	require.NoError(t, err)
	require.Equal(t, StatusCancelled, got.Status)
	close(gated.gate)
	time.Sleep(2 * retryFirst) // past the retry's backoff: it must not run
	require.Len(t, calls.of(job.ID), 1)
	e.requireTTLs(t)
}

// TestRetryDelay: a durable export's retries start at most a second after
// a failed attempt and grow to at most 30 s, with jitter (half to all of
// the step).
func TestRetryDelay(t *testing.T) {
	for n := 1; n <= 40; n++ {
		step := min(retryFirst<<min(n-1, 10), retryMost)
		for range 50 {
			d := retryDelay(n)
			require.GreaterOrEqual(t, d, step/2, "attempt %d", n)
			require.LessOrEqual(t, d, step, "attempt %d", n)
		}
	}
	require.LessOrEqual(t, retryDelay(1), time.Second)
	require.LessOrEqual(t, retryDelay(1000), 30*time.Second)
}
