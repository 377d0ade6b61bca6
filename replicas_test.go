package exporter

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/exporterkit/exporter/internal/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestMinReplicas: with a replica, an export completes only once the
// replica holds its bytes; without enough replicas it fails with
// ErrNotReplicated and never reads completed.
func TestMinReplicas(t *testing.T) {
	master := redistest.StartT(t, redistest.Options{})
	replica := redistest.StartT(t, redistest.Options{Args: []string{"--replicaof", "127.0.0.1", fmt.Sprint(master.Port)}})
	mc := redis.NewClient(&redis.Options{Addr: master.Addr, ContextTimeoutEnabled: true})
	defer mc.Close()
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr, ContextTimeoutEnabled: true})
	defer rc.Close()
	require.Eventually(t, func() bool {
		info, err := rc.Info(testCtx(t), "replication").Result()
		return err == nil && bytes.Contains([]byte(info), []byte("master_link_status:up"))
	}, 10*time.Second, 20*time.Millisecond)

	store := NewRedisStore(mc).WithPrefix("rep:")
	x, err := New(store, Config{ChunkSize: testChunk, MinReplicas: 1})
	require.NoError(t, err)
	defer x.Shutdown(testCtx(t))
	for _, size := range []int{10, 5*testChunk + 3} {
		data := randomBytes(size)
		job, err := x.StartExport(testCtx(t), alice, bytes.NewReader(data))
		require.NoError(t, err)
		job = waitFor(t, x, alice, job.ID, StatusCompleted)
		// The replica has everything the moment the completion is announced.
		replicaStore := NewRedisStore(rc).WithPrefix("rep:")
		got, err := replicaStore.Get(testCtx(t), job.ID, "")
		require.NoError(t, err)
		require.Equal(t, StatusCompleted, got.Status)
		d := newDownload(testCtx(t), replicaStore, got)
		b, err := io.ReadAll(d)
		require.NoError(t, err)
		require.Equal(t, data, b)
	}

	// Two replicas are asked for, one exists: the export fails.
	y, err := New(store, Config{ChunkSize: testChunk, MinReplicas: 2, ReplicaTimeout: 50 * time.Millisecond})
	require.NoError(t, err)
	defer y.Shutdown(testCtx(t))
	src := newFeedSource(randomBytes(3 * testChunk))
	job, err := y.StartExport(testCtx(t), alice, src)
	require.NoError(t, err)
	src.end(nil)
	got := waitFor(t, y, alice, job.ID, StatusFailed)
	require.ErrorIs(t, got.Err(), ErrNotReplicated)
	require.Empty(t, got.Checksum, "it never read completed")
}
