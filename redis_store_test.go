package exporter

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// newStoreJob creates a pending job directly in the store.
func newStoreJob(t *testing.T, e *env, ttl time.Duration) (*Job, Lease) {
	t.Helper()
	lease := Lease{Token: newToken(), TTL: ttl}
	job, err := e.store.Create(testCtx(t), &Job{ID: uuid.NewString(), Owner: "alice",
		Status: StatusPending, ChunkSize: testChunk}, lease, time.Hour)
	require.NoError(t, err)
	return job, lease
}

// TestStoreWriteIdempotent: a chunk written twice (a retried command whose
// first reply was lost) is stored once; a chunk past the next one is
// refused; a retried completion succeeds and changes nothing.
func TestStoreWriteIdempotent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		job, lease := newStoreJob(t, e, time.Minute)
		_, err := e.store.Create(ctx, job, lease, time.Hour)
		require.Error(t, err, "an id is created once")
		err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Begin: true})
		require.NoError(t, err)
		err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Begin: true})
		require.NoError(t, err, "beginning twice is harmless")

		c0, c1 := randomBytes(testChunk), randomBytes(testChunk)
		for range 2 {
			err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Index: 0, Chunks: [][]byte{c0}, Bytes: testChunk})
			require.NoError(t, err)
		}
		err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Index: 2, Chunks: [][]byte{c1}, Bytes: 3 * testChunk})
		require.Error(t, err, "a gap is refused")
		err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Index: 1, Chunks: [][]byte{c1}, Bytes: 2 * testChunk})
		require.NoError(t, err)
		err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Index: 0, Chunks: [][]byte{c1}, Bytes: testChunk})
		require.NoError(t, err, "a repeated index is ignored")

		got, err := e.store.Get(ctx, job.ID, "")
		require.NoError(t, err)
		require.Equal(t, int64(2*testChunk), got.Bytes, "Bytes never goes back")

		// A batch that only partly follows the stored chunks is refused and
		// leaves them as they were; a batch written twice is stored once.
		c2 := randomBytes(testChunk)
		err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Index: 1, Chunks: [][]byte{c1, c2}, Bytes: 3 * testChunk})
		require.Error(t, err)
		for range 2 {
			err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Index: 2, Chunks: [][]byte{c2}, Bytes: 3 * testChunk})
			require.NoError(t, err)
		}
		// While the job runs its list starts with the empty header.
		stored, err := e.client.LRange(ctx, e.store.keys(job.ID)[1], 0, -1).Result()
		require.NoError(t, err)
		require.Equal(t, []string{"", string(c0), string(c1), string(c2)}, stored)

		err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Final: StatusCompleted, Checksum: "sha256:x", Count: 2, Bytes: 2 * testChunk})
		require.Error(t, err, "completion with a chunk count that does not match is refused")
		err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Final: StatusCompleted, Checksum: "sha256:x", Count: 4, Bytes: 3 * testChunk})
		require.Error(t, err)
		done := ChunkWrite{Final: StatusCompleted, Checksum: "sha256:x", Count: 3, Bytes: 3 * testChunk}
		for range 2 {
			require.NoError(t, e.store.Write(ctx, job.ID, lease, done), "a retried completion succeeds")
			got, err = e.store.Get(ctx, job.ID, "")
			require.NoError(t, err)
			require.Equal(t, StatusCompleted, got.Status)
		}
		chunks, err := e.store.ReadChunks(ctx, job.ID, 0, 10)
		require.NoError(t, err)
		require.Equal(t, [][]byte{c0, c1, c2}, chunks, "completion drops the header")

		// After the end, the lease fences every write.
		err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Index: 2, Chunks: [][]byte{c1}, Bytes: 3 * testChunk})
		require.ErrorIs(t, err, ErrLeaseLost)
		err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Final: StatusFailed, Reason: "late"})
		require.ErrorIs(t, err, ErrLeaseLost, "a completed job never becomes failed")
		require.ErrorIs(t, e.store.Renew(ctx, time.Hour, []Held{{ID: job.ID, Owner: job.Owner, Lease: lease}})[0], ErrLeaseLost)
		got, err = e.store.Get(ctx, job.ID, "")
		require.NoError(t, err)
		require.Equal(t, StatusCompleted, got.Status)

		// One write can begin, store and complete a pending job; without
		// Begin a pending job takes no bytes.
		small, lease2 := newStoreJob(t, e, time.Minute)
		err = e.store.Write(ctx, small.ID, lease2, ChunkWrite{Chunks: [][]byte{c0}, Bytes: testChunk})
		require.ErrorIs(t, err, ErrLeaseLost)
		// The script cache is empty (a restarted server): Write loads the
		// script and writes again without storing anything twice. Written a
		// second time (a retry whose reply was lost), it changes nothing.
		require.NoError(t, e.client.ScriptFlush(ctx).Err())
		final := ChunkWrite{Begin: true, Chunks: [][]byte{c0, []byte("end")},
			Bytes: testChunk + 3, Final: StatusCompleted, Checksum: "sha256:y", Count: 2}
		for range 2 {
			require.NoError(t, e.store.Write(ctx, small.ID, lease2, final))
			got, err = e.store.Get(ctx, small.ID, "")
			require.NoError(t, err)
			require.Equal(t, StatusCompleted, got.Status)
			require.False(t, got.StartedAt.IsZero())
			require.Equal(t, int64(testChunk+3), got.Bytes)
			chunks, err := e.store.ReadChunks(ctx, small.ID, 0, 10)
			require.NoError(t, err)
			require.Equal(t, [][]byte{c0, []byte("end")}, chunks)
		}
		e.requireTTLs(t)
	})
}

// TestStoreFencing: a write with another token, or after the lease lapsed,
// is refused, and a lapsed job reads as failed with ErrWorkerLost.
func TestStoreFencing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		job, lease := newStoreJob(t, e, 200*time.Millisecond)
		err := e.store.Write(ctx, job.ID, Lease{Token: "intruder", TTL: time.Minute}, ChunkWrite{Begin: true})
		require.ErrorIs(t, err, ErrLeaseLost)
		err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Begin: true})
		require.NoError(t, err)
		err = e.store.Write(ctx, job.ID, Lease{Token: "intruder", TTL: time.Minute}, ChunkWrite{Index: 0, Chunks: [][]byte{[]byte("x")}, Bytes: 1})
		require.ErrorIs(t, err, ErrLeaseLost)
		err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Index: 0, Chunks: [][]byte{randomBytes(testChunk)}, Bytes: testChunk})
		require.NoError(t, err)

		e.elapse(300 * time.Millisecond) // the worker stops renewing
		_, err = e.store.Get(ctx, job.ID, "mallory")
		require.ErrorIs(t, err, ErrNotFound, "another owner's read finds nothing")
		_, err = e.store.Cancel(ctx, job.ID, "mallory", "no")
		require.ErrorIs(t, err, ErrNotFound)
		st, err := e.client.HGet(ctx, e.store.keys(job.ID)[0], fStatus).Result()
		require.NoError(t, err)
		require.Equal(t, "running", st, "a refused read or cancel writes nothing")
		err = e.store.Write(ctx, job.ID, lease, ChunkWrite{Index: 1, Chunks: [][]byte{[]byte("late")}, Bytes: testChunk + 4})
		require.ErrorIs(t, err, ErrLeaseLost, "a late write from a lost worker is refused")
		got, err := e.store.Get(ctx, job.ID, "")
		require.NoError(t, err)
		require.Equal(t, StatusFailed, got.Status)
		require.Equal(t, ErrWorkerLost.Error(), got.Error)
		require.Equal(t, CodeWorkerLost, got.ErrorCode)
		require.ErrorIs(t, got.Err(), ErrWorkerLost)
		require.Equal(t, int64(testChunk), got.Bytes)
		chunks, err := e.store.ReadChunks(ctx, job.ID, 0, 10)
		require.NoError(t, err)
		require.Empty(t, chunks)
		_, err = e.store.Cancel(ctx, job.ID, "", "too late")
		require.ErrorIs(t, err, ErrFinished)
		e.requireTTLs(t)

		// A pending job whose instance died lapses the same way.
		pending, _ := newStoreJob(t, e, 200*time.Millisecond)
		e.elapse(300 * time.Millisecond)
		got, err = e.store.Get(ctx, pending.ID, "")
		require.NoError(t, err)
		require.Equal(t, StatusFailed, got.Status)
		require.ErrorIs(t, got.Err(), ErrWorkerLost)
	})
}

// TestStoreMissing: every operation on an unknown id reports ErrNotFound
// and creates nothing.
func TestStoreMissing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		id, lease := uuid.NewString(), Lease{Token: "t", TTL: time.Minute}
		_, err := e.store.Get(ctx, id, "")
		require.ErrorIs(t, err, ErrNotFound)
		err = e.store.Write(ctx, id, lease, ChunkWrite{Begin: true})
		require.ErrorIs(t, err, ErrNotFound)
		err = e.store.Write(ctx, id, lease, ChunkWrite{Index: 0, Chunks: [][]byte{[]byte("x")}, Bytes: 1})
		require.ErrorIs(t, err, ErrNotFound)
		require.ErrorIs(t, e.store.Renew(ctx, time.Hour, []Held{{ID: id, Owner: "alice", Lease: lease}})[0], ErrNotFound)
		_, err = e.store.Cancel(ctx, id, "", "x")
		require.ErrorIs(t, err, ErrNotFound)
		_, err = e.store.ReadChunks(ctx, id, 0, 1)
		require.ErrorIs(t, err, ErrNotFound)
		require.Empty(t, e.keys(t))
	})
}

// TestJobCodec: a hash the library did not write is reported as corrupt,
// not half-read.
func TestJobCodec(t *testing.T) {
	good := map[string]string{fID: "i", fOwner: "o", fStatus: "running", fBytes: "1", fTotal: "0",
		fChunk: "1024", fCreated: "1", fStarted: "0", fUpdated: "2", fFinished: "0", fRetention: "5",
		fMetadata: `{"a":"b"}`}
	j, err := decodeJob(good)
	require.NoError(t, err)
	require.Equal(t, time.UnixMilli(7).UTC(), j.ExpiresAt)
	for _, f := range []string{fID, fOwner, fStatus, fBytes, fChunk, fCreated, fRetention} {
		bad := map[string]string{}
		for k, v := range good {
			bad[k] = v
		}
		delete(bad, f)
		_, err := decodeJob(bad)
		require.ErrorIs(t, err, ErrCorrupt, f)
	}
	for f, v := range map[string]string{fStatus: "done", fBytes: "-1", fTotal: "x", fChunk: "10", fMetadata: "{"} {
		bad := map[string]string{}
		for k, v := range good {
			bad[k] = v
		}
		bad[f] = v
		_, err := decodeJob(bad)
		require.ErrorIs(t, err, ErrCorrupt, f)
	}
}
