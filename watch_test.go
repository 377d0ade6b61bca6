package exporter

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWatchExport: a watcher on one instance sees the progress of an export
// that another instance runs, driven by events (an hour's lease makes the
// safety re-read 2 s apart, far slower than the snapshots), then the end.
func TestWatchExport(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		a := e.exporter(t, Config{ChunkSize: testChunk, LeaseTTL: time.Hour})
		b := e.secondExporter(t, Config{LeaseTTL: time.Hour})
		src := newFeedSource(nil)
		job, err := a.StartExport(testCtx(t), alice, src)
		require.NoError(t, err)

		type snap struct {
			job *Job
			at  time.Time
		}
		snaps := make(chan snap, 100)
		done := make(chan error, 1)
		go func() {
			var err error
			for j, werr := range b.WatchExport(testCtx(t), alice, job.ID, WatchEvery(10*time.Millisecond)) {
				if werr != nil {
					err = werr
					break
				}
				snaps <- snap{j, time.Now()}
			}
			close(snaps)
			done <- err
		}()
		first := <-snaps
		require.Contains(t, []Status{StatusPending, StatusRunning}, first.job.Status)
		for i := range 4 {
			fed := time.Now()
			src.feed(randomBytes(testChunk))
			for s := range snaps {
				require.Equal(t, StatusRunning, s.job.Status)
				if s.job.Bytes == int64(i+1)*testChunk {
					require.Less(t, s.at.Sub(fed), time.Second, "progress came by event, not by the 2 s re-read")
					break
				}
			}
		}
		src.end(nil)
		var last *Job
		for s := range snaps {
			last = s.job
		}
		require.NoError(t, <-done)
		require.NotNil(t, last)
		require.Equal(t, StatusCompleted, last.Status)
		require.Equal(t, int64(4*testChunk), last.Bytes)
		e.requireTTLs(t) // the watch mark too
	})
}

// TestWatchExportEnds: a finished job yields itself and ends; a stranger
// gets ErrNotFound; a cancel ends the watch with the cancelled snapshot;
// a caller may stop early.
func TestWatchExportEnds(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{})
		ctx := testCtx(t)
		done := completedExport(t, x, []byte("done"))
		var got []*Job
		for j, err := range x.WatchExport(ctx, alice, done.ID) {
			require.NoError(t, err)
			got = append(got, j)
		}
		require.Len(t, got, 1)
		require.Equal(t, StatusCompleted, got[0].Status)

		for _, u := range []User{bob, anon} {
			n := 0
			for j, err := range x.WatchExport(ctx, u, done.ID) {
				require.Nil(t, j)
				require.Error(t, err)
				n++
			}
			require.Equal(t, 1, n)
		}

		src := newFeedSource(nil)
		job, err := x.StartExport(ctx, alice, src)
		require.NoError(t, err)
		seen := 0
		for j, err := range x.WatchExport(ctx, alice, job.ID) {
			require.NoError(t, err)
			if seen++; seen == 1 {
				_, err := x.CancelExport(ctx, alice, job.ID)
				require.NoError(t, err)
			}
			got = append(got, j)
		}
		require.Equal(t, StatusCancelled, got[len(got)-1].Status)

		other := newFeedSource(nil)
		job, err = x.StartExport(ctx, alice, other)
		require.NoError(t, err)
		for range x.WatchExport(ctx, alice, job.ID) {
			break // the caller stops; nothing is left running
		}
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		var last error
		for _, err := range x.WatchExport(short, alice, job.ID) {
			last = err
		}
		require.ErrorIs(t, last, context.DeadlineExceeded)
		other.end(nil)
	})
}
