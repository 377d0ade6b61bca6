package exporter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

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

// TestPermissionChecker: a custom checker decides both permissions, and an
// error from it denies.
func TestPermissionChecker(t *testing.T) {
	e := newEnv(t, "miniredis")
	boom := errors.New("directory down")
	var mu sync.Mutex
	fail := false
	checker := PermissionFunc(func(_ context.Context, u User, p string) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return false, boom
		}
		return u.ID == "alice" && p == "export" || u.ID == "root" && p == "admin", nil
	})
	x := e.exporter(t, Config{Permission: "export", AdminPermission: "admin", Permissions: checker})
	ctx := testCtx(t)
	job, err := x.StartExport(ctx, User{ID: "alice"}, strings.NewReader("x"))
	require.NoError(t, err)
	_, err = x.StartExport(ctx, User{ID: "bob", Permissions: []string{"export"}}, strings.NewReader("x"))
	require.ErrorIs(t, err, ErrForbidden, "the checker, not User.Permissions, decides")
	_, err = x.GetExportStatus(ctx, User{ID: "root"}, job.ID)
	require.NoError(t, err)

	mu.Lock()
	fail = true
	mu.Unlock()
	_, err = x.StartExport(ctx, User{ID: "alice"}, strings.NewReader("x"))
	require.ErrorIs(t, err, ErrForbidden)
	require.ErrorIs(t, err, boom)
	_, err = x.GetExportStatus(ctx, User{ID: "root"}, job.ID)
	require.ErrorIs(t, err, ErrForbidden, "an admin check that fails denies")
	require.ErrorIs(t, err, boom)
	_, err = x.GetExportStatus(ctx, User{ID: "alice"}, job.ID)
	require.NoError(t, err, "the owner needs no check")
	// A stranger cannot tell an unknown id from another's job by the error.
	_, errTheirs := x.GetExportStatus(ctx, User{ID: "mallory"}, job.ID)
	_, errUnknown := x.GetExportStatus(ctx, User{ID: "mallory"}, "9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59")
	require.ErrorIs(t, errTheirs, ErrForbidden)
	require.ErrorIs(t, errUnknown, ErrForbidden)
	require.Equal(t, strings.ReplaceAll(errTheirs.Error(), job.ID, "ID"),
		strings.ReplaceAll(errUnknown.Error(), "9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59", "ID"))
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

// TestStartInput: bad input to StartExport is refused with the documented
// sentinel, the source is closed, and nothing is written.
func TestStartInput(t *testing.T) {
	e := newEnv(t, "miniredis")
	x := e.exporter(t, Config{MaxBytes: 1 << 20})
	ctx := testCtx(t)
	big := map[string]string{}
	for i := range MaxMetadataEntries + 1 {
		big[fmt.Sprint(i)] = "v"
	}
	tests := []struct {
		name string
		opts []StartOption
		want error
	}{
		{"negative total", []StartOption{WithTotal(-1)}, ErrInvalid},
		{"total above MaxBytes", []StartOption{WithTotal(1<<20 + 1)}, ErrTooLarge},
		{"too many metadata entries", []StartOption{WithMetadata(big)}, ErrInvalid},
		{"empty metadata key", []StartOption{WithMetadata(map[string]string{"": "v"})}, ErrInvalid},
		{"long metadata key", []StartOption{WithMetadata(map[string]string{strings.Repeat("k", MaxMetadataKey+1): "v"})}, ErrInvalid},
		{"long metadata value", []StartOption{WithMetadata(map[string]string{"k": strings.Repeat("v", MaxMetadataValue+1)})}, ErrInvalid},
		{"metadata not UTF-8", []StartOption{WithMetadata(map[string]string{"k": "\xff"})}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFeedSource(nil)
			_, err := x.StartExport(ctx, alice, src, tt.opts...)
			require.ErrorIs(t, err, tt.want)
			require.Equal(t, int32(1), src.closed.Load())
		})
	}
	_, err := x.StartExport(ctx, alice, nil)
	require.ErrorIs(t, err, ErrInvalid)
	require.Empty(t, e.mr.Keys())

	// The limits themselves are accepted, and metadata round-trips exactly.
	md := map[string]string{"filename": "résumé \"2026\".csv", "content-type": "text/csv; charset=utf-8",
		strings.Repeat("k", MaxMetadataKey): strings.Repeat("v", MaxMetadataValue)}
	job, err := x.StartExport(ctx, alice, strings.NewReader("x"), WithMetadata(md), WithTotal(1<<20), nil)
	require.NoError(t, err)
	job = waitFor(t, x, alice, job.ID, StatusCompleted)
	require.Equal(t, md, job.Metadata)
}

// TestNewConfig: New validates the Config and names the bad field.
func TestNewConfig(t *testing.T) {
	e := newEnv(t, "miniredis")
	_, err := New(nil, Config{})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = New(NewRedisStore(nil), Config{})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = New(e.store.WithPrefix("a{b}"), Config{})
	require.ErrorIs(t, err, ErrInvalid)
	bad := map[string]Config{
		"ChunkSize":  {ChunkSize: 1023},
		"ChunkSize ": {ChunkSize: 16<<20 + 1},
		"MaxBytes":   {MaxBytes: -1},
		"MaxRunning": {MaxRunning: -1},
		"MaxPending": {MaxPending: -1},
		"MaxPerUser": {MaxPerUser: -1},
		"Retention":  {Retention: -time.Second},
		"LeaseTTL":   {LeaseTTL: time.Millisecond},
		"Retention ": {Retention: time.Second, LeaseTTL: time.Minute},
	}
	for field, cfg := range bad {
		_, err := New(e.store, cfg)
		require.ErrorIs(t, err, ErrInvalid, field)
		require.Contains(t, err.Error(), "Config."+strings.TrimSpace(field))
	}
	x, err := New(e.store, Config{})
	require.NoError(t, err)
	require.NoError(t, x.Shutdown(testCtx(t)))
	require.Empty(t, e.mr.Keys(), "New and Shutdown do no I/O")
}
