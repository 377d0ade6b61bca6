package exporter

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestProgressInsideAChunk: a source slower than a chunk shows its bytes
// read (Job.Read) within about a second, long before a chunk is stored,
// in GetExportStatus and in WatchExport; once it completes, Read is Bytes.
func TestProgressInsideAChunk(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		src := newFeedSource(nil)
		x := e.exporter(t, Config{ChunkSize: 64 << 10})
		job, err := x.StartExport(ctx, alice, src)
		require.NoError(t, err)
		t.Cleanup(func() { src.end(nil) }) // before the Exporter's Shutdown, should the test fail

		wctx, stop := context.WithCancel(ctx)
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			watched []int64
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j, err := range x.WatchExport(wctx, alice, job.ID, WatchEvery(50*time.Millisecond)) {
				if err != nil {
					return
				}
				mu.Lock()
				watched = append(watched, j.Read)
				mu.Unlock()
			}
		}()
		defer func() { stop(); wg.Wait() }()

		for _, want := range []int64{1000, 1500} {
			src.feed(make([]byte, want-src.reads.Load()))
			// progressEvery is a second: the figure must be there within
			// two, with no chunk stored.
			require.Eventually(t, func() bool {
				got, err := x.GetExportStatus(ctx, alice, job.ID)
				require.NoError(t, err)
				require.Zero(t, got.Bytes, "no chunk is full yet")
				return got.Read == want && got.Status == StatusRunning
			}, 2*progressEvery, 10*time.Millisecond, "Read never showed %d bytes", want)
		}
		require.Eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(watched) > 0 && watched[len(watched)-1] == 1500
		}, 2*time.Second, 10*time.Millisecond, "WatchExport never showed the progress inside the chunk")

		src.end(nil)
		done := waitFor(t, x, alice, job.ID, StatusCompleted)
		require.Equal(t, int64(1500), done.Bytes)
		require.Equal(t, int64(1500), done.Read)
	})
}
