package exporter

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/exporterkit/exporter/internal/redistest"
	"github.com/stretchr/testify/require"
)

// Regression tests of the promise users care most about: a completed
// export holds exactly the bytes that were read, whatever the network
// delivers late, twice or in part, and whatever happens to the data in
// Redis meanwhile.

// fill returns n bytes of b.
func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// TestLateChunksNeverKept appends elements to a job's data list between
// two writes, as the RPUSHX of a pipeline that reached Redis late and
// without its script would: the next write stores its own chunks at its
// index, never those, and the completed export holds exactly what was
// written.
func TestLateChunksNeverKept(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		const size = testChunk
		cases := []struct {
			name  string
			late  int // elements appended after the second write
			final int // chunks of the completing write (0: a write of its own after them)
		}{
			{name: "as many as the next write", late: 2, final: 2},
			{name: "fewer", late: 1, final: 2},
			{name: "more", late: 3, final: 2},
			{name: "before a final write without chunks", late: 2, final: 0},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				job, lease := newStoreJob(t, e, 10*time.Second)
				a, b, c := fill('A', size), fill('B', size), fill('C', size)
				require.NoError(t, e.store.Write(ctx, job.ID, lease, ChunkWrite{Begin: true, Chunks: [][]byte{a, a}, Bytes: 2 * size}))
				require.NoError(t, e.store.Write(ctx, job.ID, lease, ChunkWrite{Index: 2, Chunks: [][]byte{b, b}, Bytes: 4 * size}))
				late := make([]any, tc.late)
				for i := range late {
					late[i] = b // a late copy of the write before
				}
				require.NoError(t, e.client.RPushX(ctx, e.store.keys(job.ID)[1], late...).Err())

				want := [][]byte{a, a, b, b}
				final := ChunkWrite{Index: 4, Bytes: 4 * size, Final: StatusCompleted}
				if tc.final > 0 {
					final.Chunks = [][]byte{c, c}
					final.Bytes += 2 * size
					want = append(want, c, c)
				}
				final.Count = int64(len(want))
				final.Checksum = checksum(bytes.Join(want, nil))
				require.NoError(t, e.store.Write(ctx, job.ID, lease, final))

				got, err := e.store.Get(ctx, job.ID, "")
				require.NoError(t, err)
				require.Equal(t, StatusCompleted, got.Status)
				chunks, err := e.store.ReadChunks(ctx, job.ID, 0, 100)
				require.NoError(t, err)
				require.Empty(t, faultChunksDiff(want, chunks), "stored chunks")
			})
		}
	})
}

// TestLatePartialWrite holds a chunk write on a proxy until go-redis gave
// up on its connection and stored the chunks again on another, then
// delivers the held pipeline up to the end of its RPUSHX: Redis runs it
// after the retry, without the script that checks it. The export must
// still complete with exactly the bytes that were read, for a verified
// download and for range reads alike. Before writes were transactions,
// the late chunks of the second batch were kept as the third.
func TestLatePartialWrite(t *testing.T) {
	faultNoLeaks(t)
	r := newFaultRetryRig(t)
	ctx := testCtx(t)
	data := bytes.Join([][]byte{fill('A', 2*faultChunk), fill('B', 2*faultChunk), fill('C', 2*faultChunk)}, nil)
	src := newFaultGateSource(data)
	job, err := r.x.StartExport(ctx, alice, src)
	require.NoError(t, err)
	id := job.ID

	src.release(2 * faultChunk)
	r.waitStored(t, id, 2*faultChunk)
	r.proxy.HoldNext("RPUSHX")
	src.release(2 * faultChunk)
	held, err := r.proxy.Held(5 * time.Second)
	require.NoError(t, err)
	require.Contains(t, held, "RPUSHX")
	r.waitStored(t, id, 4*faultChunk) // repeated by go-redis on a new connection
	addr, err := r.proxy.Release("RPUSHX")
	require.NoError(t, err)
	// Redis reads what a connection sent before it sees it closed.
	require.Eventually(t, func() bool {
		list, err := r.admin.ClientList(ctx).Result()
		return err == nil && !strings.Contains(list, "addr="+addr+" ")
	}, 5*time.Second, time.Millisecond, "Redis never dropped the held connection")

	src.release(2 * faultChunk)
	job, err = faultWaitTerminal(r.x, id, time.Now().Add(10*time.Second))
	require.NoError(t, err)
	require.Equal(t, StatusCompleted, job.Status, "job error: %s", job.Error)
	faultRequireOutcome(t, r.x, r.adminStore, job, data)

	d, err := r.x.OpenExport(ctx, alice, id)
	require.NoError(t, err)
	defer d.Close()
	tail := make([]byte, 2*faultChunk)
	n, err := d.ReadAt(tail, int64(4*faultChunk))
	require.True(t, err == nil || err == io.EOF, "ReadAt: %v", err)
	require.Equal(t, fill('C', 2*faultChunk), tail[:n], "a range read of the last two chunks")
}

// TestCompletionChecksStoredChunks removes a job's data list while its
// source pauses after exactly three chunks; the source then ends. The
// completing write carries no chunk, and must not record completed on the
// count alone: the export fails, saying its chunks are gone, and a store
// write that would complete it is refused with ErrCorrupt.
func TestCompletionChecksStoredChunks(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		t.Run("store", func(t *testing.T) {
			job, lease := newStoreJob(t, e, 10*time.Second)
			c := fill('A', testChunk)
			require.NoError(t, e.store.Write(ctx, job.ID, lease, ChunkWrite{Begin: true, Chunks: [][]byte{c, c, c}, Bytes: 3 * testChunk}))
			require.NoError(t, e.client.Del(ctx, e.store.keys(job.ID)[1]).Err())
			err := e.store.Write(ctx, job.ID, lease, ChunkWrite{Index: 3, Bytes: 3 * testChunk, Final: StatusCompleted,
				Count: 3, Checksum: checksum(fill('A', 3*testChunk))})
			require.ErrorIs(t, err, ErrCorrupt)
			require.ErrorContains(t, err, "0 of its 3 stored chunks are gone")
			got, err := e.store.Get(ctx, job.ID, "")
			require.NoError(t, err)
			require.Equal(t, StatusRunning, got.Status)
		})
		t.Run("export", func(t *testing.T) {
			x := e.exporter(t, Config{ChunkSize: testChunk})
			src := newFeedSource(fill('A', 3*testChunk))
			job, err := x.StartExport(ctx, alice, src)
			require.NoError(t, err)
			require.Eventually(t, func() bool {
				j, err := x.GetExportStatus(ctx, alice, job.ID)
				return err == nil && j.Bytes == 3*testChunk
			}, 10*time.Second, time.Millisecond)
			require.NoError(t, e.client.Del(ctx, e.store.keys(job.ID)[1]).Err())
			src.end(nil)
			job = waitFor(t, x, alice, job.ID, StatusFailed)
			require.Empty(t, job.Checksum)
			require.Contains(t, job.Error, "stored chunks are gone")
			require.Equal(t, CodeCorrupt, job.ErrorCode)
			require.ErrorIs(t, job.Err(), ErrCorrupt)
		})
	})
}

// TestClockSkewDoesNotHideALapse gives a job whose instance is gone an
// update time 60 s ahead of the reader's clock, as a reader whose clock
// runs 60 s behind Redis's (or the writer's) would see it, and removes its
// lease: the next read reports it failed with ErrWorkerLost, and
// WaitExport returns it, for every reader alike.
func TestClockSkewDoesNotHideALapse(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		x := e.exporter(t, Config{LeaseTTL: 300 * time.Millisecond})
		job, _ := newStoreJob(t, e, time.Minute)
		k := e.store.keys(job.ID)
		ahead := time.Now().Add(time.Minute).UnixMilli()
		require.NoError(t, e.client.HSet(ctx, k[0], fUpdated, ahead).Err())
		require.NoError(t, e.client.Del(ctx, k[2]).Err()) // the lease lapsed

		got, err := x.GetExportStatus(ctx, alice, job.ID)
		require.NoError(t, err)
		require.Equal(t, StatusFailed, got.Status)
		require.ErrorIs(t, got.Err(), ErrWorkerLost)
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		got, err = x.WaitExport(wctx, alice, job.ID)
		require.NoError(t, err)
		require.Equal(t, StatusFailed, got.Status)
	})
}

// TestStartThatFailedLeavesNoJob freezes Redis while StartExport records a
// job under a 100 ms ctx: StartExport returns the ctx's error, and Redis,
// thawed, applies the creation late. The job must then disappear, as its
// caller was told it never started, instead of lingering pending and
// reading failed "worker lost" for a day.
func TestStartThatFailedLeavesNoJob(t *testing.T) {
	faultNoLeaks(t)
	srv := redistest.StartT(t, redistest.Options{})
	store := NewRedisStore(faultClient(t, srv.Addr)).WithPrefix("abandon:")
	x := faultExporter(t, store, Config{LeaseTTL: 500 * time.Millisecond})
	ctx := testCtx(t)
	warm, err := x.StartExport(ctx, alice, strings.NewReader("listening"))
	require.NoError(t, err)
	waitFor(t, x, alice, warm.ID, StatusCompleted)

	require.NoError(t, srv.Freeze())
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	src := newFeedSource(nil)
	_, err = x.StartExport(short, alice, src)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	src.requireClosedOnce(t)
	time.Sleep(200 * time.Millisecond) // the outage goes on: the undoing waits it out
	require.NoError(t, srv.Thaw())

	admin := faultClient(t, srv.Addr)
	require.Eventually(t, func() bool {
		keys, err := admin.Keys(ctx, "abandon:{*}:meta").Result()
		return err == nil && len(keys) == 1
	}, 10*time.Second, 10*time.Millisecond, "a job of the failed start remains")
	time.Sleep(time.Second) // past its lease: had it lingered, it would read failed
	list, err := x.ListExports(ctx, alice, ListOptions{})
	require.NoError(t, err)
	require.Len(t, list.Jobs, 1)
	require.Equal(t, warm.ID, list.Jobs[0].ID)
	faultRequireTTLs(t, admin, "abandon:")
}
