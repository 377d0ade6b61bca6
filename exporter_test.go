package exporter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

const testChunk = 1024 // the smallest chunk size, so small data spans many chunks

func checksum(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// TestRoundTrip stores binary data of awkward sizes and reads it back
// through every read path; the chunk list must hold exactly ChunkSize-byte
// chunks.
func TestRoundTrip(t *testing.T) {
	sizes := []int{0, 1, testChunk - 1, testChunk, testChunk + 1, 7*testChunk + 13, 16 * testChunk}
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{ChunkSize: testChunk})
		for _, size := range sizes {
			t.Run(fmt.Sprint(size), func(t *testing.T) {
				ctx := testCtx(t)
				data := randomBytes(size)
				src := newFeedSource(data)
				src.end(nil)
				job, err := x.StartExport(ctx, alice, src, WithTotal(int64(size)),
					WithMetadata(map[string]string{"filename": "a.bin"}))
				require.NoError(t, err)
				require.Equal(t, StatusPending, job.Status)
				require.Equal(t, alice.ID, job.Owner)
				require.True(t, validID(job.ID), job.ID)

				job = waitFor(t, x, alice, job.ID, StatusCompleted)
				src.requireClosedOnce(t)
				require.Equal(t, int64(size), job.Bytes)
				require.Equal(t, int64(size), job.Total)
				require.Equal(t, checksum(data), job.Checksum)
				require.Equal(t, "a.bin", job.Metadata["filename"])
				require.Equal(t, testChunk, job.ChunkSize)
				require.False(t, job.StartedAt.IsZero())
				require.False(t, job.FinishedAt.IsZero())
				require.False(t, job.FinishedAt.Before(job.StartedAt))
				require.True(t, job.ExpiresAt.After(job.FinishedAt))
				require.Equal(t, 1.0, job.Progress())

				chunks, err := e.store.ReadChunks(ctx, job.ID, 0, size/testChunk+2)
				require.NoError(t, err)
				require.Len(t, chunks, (size+testChunk-1)/testChunk)
				for i, c := range chunks {
					if i < len(chunks)-1 {
						require.Len(t, c, testChunk, "chunk %d", i)
					}
				}
				require.True(t, bytes.Equal(data, bytes.Join(chunks, nil)), "stored chunks")

				d, err := x.OpenExport(ctx, alice, job.ID)
				require.NoError(t, err)
				require.Equal(t, int64(size), d.Size())
				got, err := io.ReadAll(d)
				require.NoError(t, err)
				require.True(t, bytes.Equal(data, got), "Read round trip")

				_, err = d.Seek(0, io.SeekStart)
				require.NoError(t, err)
				var buf bytes.Buffer
				n, err := io.Copy(&buf, d) // WriteTo
				require.NoError(t, err)
				require.Equal(t, int64(size), n)
				require.True(t, bytes.Equal(data, buf.Bytes()), "WriteTo round trip")
				require.NoError(t, d.Close())
				e.requireTTLs(t)
			})
		}
	})
}

// TestChunkSizeRecordedPerJob: an instance with another ChunkSize reads a
// job by the chunk size the job recorded.
func TestChunkSizeRecordedPerJob(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		a := e.exporter(t, Config{ChunkSize: 1024})
		b := e.secondExporter(t, Config{ChunkSize: 4096})
		data := randomBytes(10_000)
		job, err := a.StartExport(testCtx(t), alice, bytes.NewReader(data))
		require.NoError(t, err)
		job = waitFor(t, b, alice, job.ID, StatusCompleted)
		require.Equal(t, 1024, job.ChunkSize)
		d, err := b.OpenExport(testCtx(t), alice, job.ID)
		require.NoError(t, err)
		got, err := io.ReadAll(d)
		require.NoError(t, err)
		require.Equal(t, data, got)
	})
}

// TestAccess runs every call as every kind of user.
func TestAccess(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{ChunkSize: testChunk, AdminPermission: "exporter-admin"})
		ctx := testCtx(t)
		done, err := x.StartExport(ctx, alice, strings.NewReader("done"))
		require.NoError(t, err)
		waitFor(t, x, alice, done.ID, StatusCompleted)

		type call func(u User, id string) error
		calls := map[string]call{
			"status": func(u User, id string) error { _, err := x.GetExportStatus(ctx, u, id); return err },
			"wait":   func(u User, id string) error { _, err := x.WaitExport(ctx, u, id); return err },
			"open": func(u User, id string) error {
				d, err := x.OpenExport(ctx, u, id)
				if err == nil {
					d.Close()
				}
				return err
			},
		}
		users := []struct {
			user User
			want error
		}{
			{alice, nil}, {admin, nil}, {bob, ErrNotFound}, {nobody, ErrNotFound}, {anon, ErrUnauthenticated},
		}
		for name, c := range calls {
			for _, u := range users {
				t.Run(name+"/"+u.user.ID, func(t *testing.T) {
					err := c(u.user, done.ID)
					if u.want == nil {
						require.NoError(t, err)
					} else {
						require.ErrorIs(t, err, u.want)
					}
				})
			}
		}
		// Cancel: only the owner and the admin reach the job; a finished job
		// answers them ErrFinished and is unchanged.
		for _, u := range users {
			t.Run("cancel/"+u.user.ID, func(t *testing.T) {
				job, err := x.CancelExport(ctx, u.user, done.ID)
				if u.want == nil {
					require.ErrorIs(t, err, ErrFinished)
					require.Equal(t, StatusCompleted, job.Status)
				} else {
					require.ErrorIs(t, err, u.want)
					require.Nil(t, job)
				}
			})
		}
		// Start: needs the permission; refusals write nothing.
		before := len(e.keys(t))
		for _, u := range []struct {
			user User
			want error
		}{{anon, ErrUnauthenticated}, {nobody, ErrForbidden}, {admin, ErrForbidden}} {
			src := newFeedSource(nil)
			_, err := x.StartExport(ctx, u.user, src)
			require.ErrorIs(t, err, u.want)
			require.Equal(t, int32(1), src.closed.Load(), "a refused source is closed")
		}
		require.Len(t, e.keys(t), before, "a refused start wrote keys")
	})
}

// countingStore counts the store calls, to prove some calls make none.
type countingStore struct {
	Store
	mu    sync.Mutex
	calls int
}

func (c *countingStore) Get(ctx context.Context, id, owner string) (*Job, error) {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	return c.Store.Get(ctx, id, owner)
}

func (c *countingStore) Cancel(ctx context.Context, id, owner, reason string) (*Job, error) {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	return c.Store.Cancel(ctx, id, owner, reason)
}

// TestMalformedIDs: ids that are not canonical UUIDs are ErrNotFound
// without a store call, so they can never name another key.
func TestMalformedIDs(t *testing.T) {
	e := newEnv(t, "miniredis")
	cs := &countingStore{Store: e.store}
	x := e.exporterOn(t, cs, Config{})
	ctx := testCtx(t)
	ids := []string{"", "x", "../meta", "exporter:{a}:meta", "*",
		"9B2F0D8E-2C1A-4E55-9A3B-6E1D2C3B4A59",   // upper case
		"9b2f0d8e2c1a4e559a3b6e1d2c3b4a59",       // no dashes
		"9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a5",    // short
		"9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59 ",  // trailing space
		"9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a5g",   // not hex
		"{9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59}", // braces
	}
	for _, id := range ids {
		_, err := x.GetExportStatus(ctx, alice, id)
		require.ErrorIs(t, err, ErrNotFound, id)
		_, err = x.CancelExport(ctx, alice, id)
		require.ErrorIs(t, err, ErrNotFound, id)
		_, err = x.WaitExport(ctx, alice, id)
		require.ErrorIs(t, err, ErrNotFound, id)
		_, err = x.OpenExport(ctx, alice, id)
		require.ErrorIs(t, err, ErrNotFound, id)
	}
	require.Zero(t, cs.calls)
	require.Empty(t, e.mr.Keys())
	// A well-formed id that does not exist: not found, nothing created.
	_, err := x.GetExportStatus(ctx, alice, "9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59")
	require.ErrorIs(t, err, ErrNotFound)
	require.Empty(t, e.mr.Keys())
}
