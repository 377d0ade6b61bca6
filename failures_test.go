package exporter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// readerFunc is an io.Reader that may also count its Closes.
type readerFunc struct {
	read   func(p []byte) (int, error)
	closes atomic.Int32
}

func (r *readerFunc) Read(p []byte) (int, error) { return r.read(p) }
func (r *readerFunc) Close() error               { r.closes.Add(1); return nil }

// TestSourceFailures: every way a source can fail ends the export as
// failed with a useful error, removes its stored bytes, closes the source
// once, and leaves the process running.
func TestSourceFailures(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{ChunkSize: testChunk, MaxBytes: 8 * testChunk})
		// Each source serves 3 chunks, waits until they are stored (so there
		// is data to remove), then misbehaves.
		var gate chan struct{}
		prefixThen := func(then func(p []byte) (int, error)) func(p []byte) (int, error) {
			sent := 0
			return func(p []byte) (int, error) {
				if sent < 3*testChunk {
					n := copy(p, make([]byte, min(len(p), 3*testChunk-sent)))
					sent += n
					return n, nil
				}
				<-gate
				return then(p)
			}
		}
		tests := []struct {
			name  string
			read  func(p []byte) (int, error)
			error string
			code  string
			is    error
		}{
			{"error", prefixThen(func([]byte) (int, error) { return 0, errors.New("database went away") }),
				"database went away", CodeSource, nil},
			{"panic", prefixThen(func([]byte) (int, error) { panic("boom") }),
				"source Read panicked: boom", CodeSource, nil},
			{"no progress", prefixThen(func([]byte) (int, error) { return 0, nil }),
				io.ErrNoProgress.Error(), CodeSource, nil},
			{"bad count", prefixThen(func(p []byte) (int, error) { return len(p) + 1, nil }),
				"source Read returned", CodeSource, nil},
			{"too large", prefixThen(func(p []byte) (int, error) { return len(p), nil }),
				"export too large: more than MaxBytes", CodeTooLarge, ErrTooLarge},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				gate = make(chan struct{})
				r := &readerFunc{read: tt.read}
				job, err := x.StartExport(testCtx(t), alice, r)
				require.NoError(t, err)
				require.Eventually(t, func() bool {
					j, err := x.GetExportStatus(testCtx(t), alice, job.ID)
					require.NoError(t, err)
					return j.Bytes == 3*testChunk
				}, 10*time.Second, time.Millisecond)
				close(gate)
				job = waitFor(t, x, alice, job.ID, StatusFailed)
				require.Contains(t, job.Error, tt.error)
				require.Equal(t, tt.code, job.ErrorCode)
				if tt.is != nil {
					require.ErrorIs(t, job.Err(), tt.is)
				}
				// Bytes is not reset when the data is removed (a source that is
				// too large may have had more stored, up to MaxBytes).
				require.GreaterOrEqual(t, job.Bytes, int64(3*testChunk))
				require.LessOrEqual(t, job.Bytes, int64(8*testChunk))
				require.Empty(t, job.Checksum)
				chunks, err := e.store.ReadChunks(testCtx(t), job.ID, 0, 100)
				require.NoError(t, err)
				require.Empty(t, chunks, "a failed export's data is removed")
				require.Eventually(t, func() bool { return r.closes.Load() == 1 }, 5*time.Second, time.Millisecond)
				_, err = x.OpenExport(testCtx(t), alice, job.ID)
				require.ErrorIs(t, err, ErrNotReady)
				e.requireTTLs(t)
			})
		}
		// Exactly MaxBytes is fine.
		data := randomBytes(8 * testChunk)
		job, err := x.StartExport(testCtx(t), alice, bytes.NewReader(data))
		require.NoError(t, err)
		require.Equal(t, int64(len(data)), waitFor(t, x, alice, job.ID, StatusCompleted).Bytes)
	})
}

// TestHugeReads: a source that returns everything in one Read, or a byte at
// a time with io.EOF alongside the last, is chunked exactly.
func TestOddReads(t *testing.T) {
	e := newEnv(t, "miniredis")
	x := e.exporter(t, Config{ChunkSize: testChunk})
	data := randomBytes(5*testChunk + 3)
	sources := map[string]io.Reader{
		"one read":         bytes.NewReader(data),
		"byte at a time":   &oneByteEOF{data: data},
		"with empty reads": &emptyEvery{r: bytes.NewReader(data)},
	}
	for name, r := range sources {
		t.Run(name, func(t *testing.T) {
			job, err := x.StartExport(testCtx(t), alice, r)
			require.NoError(t, err)
			job = waitFor(t, x, alice, job.ID, StatusCompleted)
			require.Equal(t, checksum(data), job.Checksum)
			chunks, err := e.store.ReadChunks(testCtx(t), job.ID, 0, 100)
			require.NoError(t, err)
			require.Len(t, chunks, 6)
			require.Len(t, chunks[5], 3)
		})
	}
}

// oneByteEOF returns one byte per Read, and io.EOF with the last one.
type oneByteEOF struct{ data []byte }

func (r *oneByteEOF) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	p[0], r.data = r.data[0], r.data[1:]
	if len(r.data) == 0 {
		return 1, io.EOF
	}
	return 1, nil
}

// emptyEvery returns (0, nil) every other Read: fewer than 100 in a row is
// not a failure.
type emptyEvery struct {
	r    io.Reader
	flip bool
}

func (r *emptyEvery) Read(p []byte) (int, error) {
	if r.flip = !r.flip; r.flip {
		return 0, nil
	}
	return r.r.Read(p[:min(len(p), 100)])
}

// TestLimits: MaxPending and MaxPerUser refuse with ErrBusy and write
// nothing; capacity returns as exports end.
func TestLimits(t *testing.T) {
	e := newEnv(t, "miniredis")
	x := e.exporter(t, Config{MaxRunning: 1, MaxPending: 2, MaxPerUser: 2})
	ctx := testCtx(t)
	var srcs []*feedSource
	start := func(u User) (*Job, error) {
		s := newFeedSource(nil)
		srcs = append(srcs, s)
		return x.StartExport(ctx, u, s)
	}
	a1, err := start(alice)
	require.NoError(t, err)
	_, err = start(alice)
	require.NoError(t, err)
	_, err = start(alice)
	require.ErrorIs(t, err, ErrBusy, "MaxPerUser")
	_, err = start(bob)
	require.NoError(t, err)
	keys := len(e.mr.Keys())
	_, err = start(admin2)
	require.ErrorIs(t, err, ErrBusy, "MaxRunning + MaxPending")
	require.Len(t, e.mr.Keys(), keys, "a busy refusal writes nothing")
	require.Equal(t, int32(1), srcs[len(srcs)-1].closed.Load())

	srcs[0].end(nil)
	waitFor(t, x, alice, a1.ID, StatusCompleted)
	// The slot returns once the worker has closed the source and let go,
	// a moment after the store reads completed.
	require.Eventually(t, func() bool { _, err = start(alice); return err == nil },
		5*time.Second, time.Millisecond, "capacity came back: %v", err)
	for _, s := range srcs {
		s.end(nil)
	}
}

var admin2 = User{ID: "carol", Permissions: []string{"exporter"}}

// TestRetention: every key has a TTL while pending, running and after each
// ending; a job disappears Retention after its last update and then reads
// as ErrNotFound.
func TestRetention(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{ChunkSize: testChunk, MaxRunning: 1, Retention: time.Second, LeaseTTL: 300 * time.Millisecond})
		ctx := testCtx(t)
		running := newFeedSource(randomBytes(2 * testChunk))
		r, err := x.StartExport(ctx, alice, running)
		require.NoError(t, err)
		p, err := x.StartExport(ctx, alice, strings.NewReader("queued"))
		require.NoError(t, err)
		require.Equal(t, StatusPending, p.Status)
		waitStatus(t, x, alice, r.ID, StatusRunning)
		e.requireTTLs(t)

		// A running job outlives Retention while its lease is renewed.
		time.Sleep(1500 * time.Millisecond)
		job, err := x.GetExportStatus(ctx, alice, r.ID)
		require.NoError(t, err)
		require.Equal(t, StatusRunning, job.Status)
		require.True(t, job.ExpiresAt.After(time.Now()), "renewals count as updates")
		e.requireTTLs(t)

		running.end(nil)
		waitFor(t, x, alice, r.ID, StatusCompleted)
		waitFor(t, x, alice, p.ID, StatusCompleted)
		e.requireTTLs(t)
		e.elapse(1100 * time.Millisecond)
		for _, id := range []string{r.ID, p.ID} {
			_, err = x.GetExportStatus(ctx, alice, id)
			require.ErrorIs(t, err, ErrNotFound)
		}
		// What is left is the owner's list index and the cross-owner
		// index's shards, which outlive their newest entry by twice the
		// retention, and then go too; and the instance's report, which
		// lasts as long as the instance runs.
		indexes := []string{e.store.ownerKey(alice.ID), e.store.instancesKey()}
		for n := range allShards {
			indexes = append(indexes, e.store.allShardKey(n))
		}
		for _, k := range e.keys(t) {
			require.Contains(t, indexes, k)
		}
		e.elapse(2100 * time.Millisecond)
		require.NoError(t, x.Shutdown(ctx))
		require.Empty(t, e.keys(t))
	})
}

// TestShutdown: running and pending exports are failed with "exporter shut
// down" when ctx ends first, their sources closed, and every goroutine
// gone; the store-only calls keep working.
func TestShutdown(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x, err := New(e.store, Config{ChunkSize: testChunk, MaxRunning: 1})
		require.NoError(t, err)
		ctx := testCtx(t)
		run, pend := newFeedSource(randomBytes(testChunk)), newFeedSource(nil)
		r, err := x.StartExport(ctx, alice, run)
		require.NoError(t, err)
		p, err := x.StartExport(ctx, alice, pend)
		require.NoError(t, err)
		waitStatus(t, x, alice, r.ID, StatusRunning)

		sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		require.ErrorIs(t, x.Shutdown(sctx), context.DeadlineExceeded)
		run.requireClosedOnce(t)
		pend.requireClosedOnce(t)
		for _, id := range []string{r.ID, p.ID} {
			job, err := x.GetExportStatus(ctx, alice, id)
			require.NoError(t, err)
			require.Equal(t, StatusFailed, job.Status)
			require.Equal(t, ErrClosed.Error(), job.Error)
			require.Equal(t, CodeShutdown, job.ErrorCode)
			require.ErrorIs(t, job.Err(), ErrClosed)
		}
		_, err = x.StartExport(ctx, alice, strings.NewReader("late"))
		require.ErrorIs(t, err, ErrClosed)
		require.NoError(t, x.Shutdown(ctx), "a second Shutdown is safe")
		e.requireTTLs(t)

		// Store-only calls keep working: on a job another instance ran.
		y := e.secondExporter(t, Config{})
		done, err := y.StartExport(ctx, alice, strings.NewReader("after"))
		require.NoError(t, err)
		waitFor(t, x, alice, done.ID, StatusCompleted)
		d, err := x.OpenExport(ctx, alice, done.ID)
		require.NoError(t, err)
		b, err := io.ReadAll(d)
		require.NoError(t, err)
		require.Equal(t, "after", string(b))
		_, err = x.CancelExport(ctx, alice, done.ID)
		require.ErrorIs(t, err, ErrFinished)
	})
}

// TestShutdownDrains: with time enough, running and pending exports finish
// and Shutdown returns nil.
func TestShutdownDrains(t *testing.T) {
	e := newEnv(t, "miniredis")
	x, err := New(e.store, Config{ChunkSize: testChunk, MaxRunning: 1})
	require.NoError(t, err)
	ctx := testCtx(t)
	srcs := []*feedSource{newFeedSource(randomBytes(testChunk)), newFeedSource(randomBytes(10))}
	var ids []string
	for _, s := range srcs {
		job, err := x.StartExport(ctx, alice, s)
		require.NoError(t, err)
		ids = append(ids, job.ID)
	}
	go func() { // once Shutdown refuses new starts, so that it drains them
		for !x.sched.isClosed() {
			time.Sleep(time.Millisecond)
		}
		for _, s := range srcs {
			s.end(nil)
		}
	}()
	require.NoError(t, x.Shutdown(ctx))
	for _, id := range ids {
		job, err := x.GetExportStatus(ctx, alice, id)
		require.NoError(t, err)
		require.Equal(t, StatusCompleted, job.Status)
	}
}
