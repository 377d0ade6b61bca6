package exporter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCancelRunning cancels a running export from a second Exporter on its
// own client: the status is recorded before CancelExport returns, the data
// is removed, no further byte is stored, and the first instance closes the
// source.
func TestCancelRunning(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		// An hour's lease: a renewal cannot be what stops the run in time,
		// only the cancel notification can.
		a := e.exporter(t, Config{ChunkSize: testChunk, LeaseTTL: time.Hour})
		b := e.secondExporter(t, Config{ChunkSize: testChunk})
		ctx := testCtx(t)
		src := newFeedSource(randomBytes(3 * testChunk))
		job, err := a.StartExport(ctx, alice, src)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			j, err := b.GetExportStatus(ctx, alice, job.ID)
			require.NoError(t, err)
			return j.Bytes >= 2*testChunk
		}, 10*time.Second, time.Millisecond)

		job, err = b.CancelExport(ctx, alice, job.ID)
		require.NoError(t, err)
		require.Equal(t, StatusCancelled, job.Status)
		require.Equal(t, ErrCancelled.Error(), job.Error)
		require.Equal(t, CodeCancelled, job.ErrorCode)
		require.ErrorIs(t, job.Err(), ErrCancelled)
		require.False(t, job.FinishedAt.IsZero())
		src.requireClosedOnce(t) // reached instance a

		src.feed(randomBytes(4 * testChunk)) // too late: nothing more is stored
		chunks, err := e.store.ReadChunks(ctx, job.ID, 0, 100)
		require.NoError(t, err)
		require.Empty(t, chunks, "a cancelled export's data is removed")
		got := waitFor(t, a, alice, job.ID, StatusCancelled)
		require.Equal(t, job.Bytes, got.Bytes)

		again, err := a.CancelExport(ctx, alice, job.ID)
		require.NoError(t, err, "cancelling a cancelled export is not an error")
		require.Equal(t, StatusCancelled, again.Status)
		_, err = a.OpenExport(ctx, alice, job.ID)
		require.ErrorIs(t, err, ErrNotReady)
		// The error carries the job: a caller says why without a second read.
		var notReady *NotReadyError
		require.ErrorAs(t, err, &notReady)
		require.Equal(t, job.ID, notReady.Job.ID)
		require.Equal(t, StatusCancelled, notReady.Job.Status)
		require.Equal(t, CodeCancelled, notReady.Job.ErrorCode)
		// An id that is none is quoted capped, not echoed whole.
		_, err = a.OpenExport(ctx, alice, strings.Repeat("x", 5000))
		require.ErrorIs(t, err, ErrNotFound)
		require.Less(t, len(err.Error()), 300)
		e.requireTTLs(t)
	})
}

// TestCancelPending cancels an export that waits for a run slot, from the
// other instance: it never runs and its source is closed.
func TestCancelPending(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		a := e.exporter(t, Config{ChunkSize: testChunk, MaxRunning: 1, LeaseTTL: time.Hour})
		b := e.secondExporter(t, Config{})
		ctx := testCtx(t)
		blocker := newFeedSource(nil)
		first, err := a.StartExport(ctx, alice, blocker)
		require.NoError(t, err)
		waitStatus(t, a, alice, first.ID, StatusRunning)

		queued := newFeedSource([]byte("never read"))
		queued.end(nil)
		job, err := a.StartExport(ctx, alice, queued)
		require.NoError(t, err)
		job, err = b.CancelExport(ctx, alice, job.ID)
		require.NoError(t, err)
		require.Equal(t, StatusCancelled, job.Status)
		require.True(t, job.StartedAt.IsZero(), "it never started")
		queued.requireClosedOnce(t)
		require.Zero(t, queued.reads.Load())

		blocker.end(nil)
		waitFor(t, a, alice, first.ID, StatusCompleted)
		require.Equal(t, StatusCancelled, waitFor(t, a, alice, job.ID, StatusCancelled).Status)
	})
}

// TestCancelFinished: cancelling a completed or failed export returns it
// unchanged with ErrFinished.
func TestCancelFinished(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{})
		ctx := testCtx(t)
		ok, err := x.StartExport(ctx, alice, strings.NewReader("fine"))
		require.NoError(t, err)
		ok = waitFor(t, x, alice, ok.ID, StatusCompleted)
		src := newFeedSource(nil)
		src.end(errors.New("disk on fire"))
		bad, err := x.StartExport(ctx, alice, src)
		require.NoError(t, err)
		bad = waitFor(t, x, alice, bad.ID, StatusFailed)

		for _, before := range []*Job{ok, bad} {
			got, err := x.CancelExport(ctx, alice, before.ID)
			require.ErrorIs(t, err, ErrFinished)
			require.Equal(t, before.Status, got.Status)
			require.Equal(t, before.Error, got.Error)
			require.Equal(t, before.Checksum, got.Checksum)
			require.Equal(t, before.FinishedAt, got.FinishedAt)
		}
		d, err := x.OpenExport(ctx, alice, ok.ID)
		require.NoError(t, err, "a refused cancel left the data")
		d.Close()
	})
}

// TestCancelRacesCompletion releases an export's last bytes and cancels it
// at the same moment, many times: each ends in exactly one of the two, and
// the canceller, the waiter and the download agree on which.
func TestCancelRacesCompletion(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		a := e.exporter(t, Config{ChunkSize: testChunk})
		b := e.secondExporter(t, Config{ChunkSize: testChunk})
		ctx := testCtx(t)
		outcomes := map[Status]int{}
		for range 40 {
			data := randomBytes(2*testChunk + 5)
			src := newFeedSource(data[:testChunk])
			job, err := a.StartExport(ctx, alice, src)
			require.NoError(t, err)
			waitStatus(t, a, alice, job.ID, StatusRunning)

			var (
				wg        sync.WaitGroup
				cancelled *Job
				cerr      error
			)
			wg.Add(1)
			go func() {
				defer wg.Done()
				cancelled, cerr = b.CancelExport(ctx, alice, job.ID)
			}()
			src.feed(data[testChunk:])
			src.end(nil)
			wg.Wait()

			final := waitFor(t, a, alice, job.ID, cancelled.Status)
			switch {
			case cerr == nil:
				require.Equal(t, StatusCancelled, final.Status)
				_, err := a.OpenExport(ctx, alice, job.ID)
				require.ErrorIs(t, err, ErrNotReady)
			case errors.Is(cerr, ErrFinished):
				require.Equal(t, StatusCompleted, final.Status)
				d, err := a.OpenExport(ctx, alice, job.ID)
				require.NoError(t, err)
				var got bytes.Buffer
				_, err = d.WriteTo(&got)
				require.NoError(t, err)
				require.Equal(t, data, got.Bytes())
			default:
				t.Fatalf("cancel: %v", cerr)
			}
			src.requireClosedOnce(t)
			outcomes[final.Status]++
		}
		t.Logf("outcomes: %v", outcomes)
	})
}

// TestCancelWithoutNotification: when the cancel notification is lost (here:
// the listener never hears it because the canceller publishes nowhere the
// runner listens), the runner still stops at its next chunk write.
func TestCancelWithoutNotification(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		a := e.exporter(t, Config{ChunkSize: testChunk, LeaseTTL: time.Hour})
		ctx := testCtx(t)
		src := newFeedSource(randomBytes(testChunk))
		job, err := a.StartExport(ctx, alice, src)
		require.NoError(t, err)
		waitStatus(t, a, alice, job.ID, StatusRunning)
		// Cancel through a store whose channels differ: the state changes in
		// the same keys, but the notification goes to a channel nobody hears.
		silent := &silentCancelStore{RedisStore: e.store}
		_, err = silent.Cancel(ctx, job.ID, "", ErrCancelled.Error())
		require.NoError(t, err)
		src.feed(randomBytes(2 * testChunk)) // the next write is refused
		src.requireClosedOnce(t)
		got, err := a.GetExportStatus(ctx, alice, job.ID)
		require.NoError(t, err)
		require.Equal(t, StatusCancelled, got.Status)
		chunks, err := e.store.ReadChunks(ctx, job.ID, 0, 100)
		require.NoError(t, err)
		require.Empty(t, chunks)
	})
}

// silentCancelStore cancels like RedisStore but announces the cancel on a
// channel no Exporter listens to.
type silentCancelStore struct{ *RedisStore }

func (s *silentCancelStore) Cancel(ctx context.Context, id, owner, reason string) (*Job, error) {
	res, err := scriptCancel.Run(ctx, s.client, s.keys(id), s.prefix+"nobody-listens", owner, reason).Slice()
	if err != nil {
		return nil, err
	}
	if res[0] != "ok" {
		return nil, fmt.Errorf("cancel: %v", res[0])
	}
	return nil, nil
}

// TestCancelCaughtByRenewal: with no notification and no chunk write (the
// source is stuck), the lease renewal notices the cancel and closes the
// source within one renewal interval.
func TestCancelCaughtByRenewal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		a := e.exporter(t, Config{ChunkSize: testChunk, LeaseTTL: 300 * time.Millisecond})
		ctx := testCtx(t)
		src := newFeedSource(nil)
		job, err := a.StartExport(ctx, alice, src)
		require.NoError(t, err)
		waitStatus(t, a, alice, job.ID, StatusRunning)
		_, err = (&silentCancelStore{RedisStore: e.store}).Cancel(ctx, job.ID, "", ErrCancelled.Error())
		require.NoError(t, err)
		src.requireClosedOnce(t)
		require.Equal(t, StatusCancelled, waitFor(t, a, alice, job.ID, StatusCancelled).Status)
	})
}
