package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// listAll pages through ListExports with opts, limit at a time, and
// returns the ids in the order listed.
func listAll(t *testing.T, x *Exporter, user User, opts ListOptions) []*Job {
	t.Helper()
	var jobs []*Job
	for page := 0; ; page++ {
		require.Less(t, page, 200, "pagination does not end")
		list, err := x.ListExports(testCtx(t), user, opts)
		require.NoError(t, err)
		require.LessOrEqual(t, len(list.Jobs), opts.Limit)
		jobs = append(jobs, list.Jobs...)
		if opts.Cursor = list.Next; opts.Cursor == "" {
			return jobs
		}
	}
}

func ids(jobs []*Job) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.ID
	}
	return out
}

// TestListAllOwners: an admin lists every owner's exports, newest first,
// each exactly once across pages of every size, from all the shards of the
// cross-owner index, many of them created in the same millisecond; a
// status filter keeps only that status and pages the same way.
func TestListAllOwners(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{ChunkSize: testChunk, AdminPermission: "exporter-admin"})
		ctx := testCtx(t)
		users := []User{alice, bob, {ID: "carol", Permissions: []string{"exporter"}}}
		var want []*Job // oldest first
		for i := range 40 {
			u := users[i%len(users)]
			job, err := x.StartExport(ctx, u, strings.NewReader(fmt.Sprint("export ", i)))
			require.NoError(t, err)
			want = append(want, job)
			if i%8 == 0 {
				time.Sleep(2 * time.Millisecond) // some apart, most within a millisecond
			}
		}
		for _, j := range want {
			waitFor(t, x, User{ID: j.Owner, Permissions: []string{"exporter"}}, j.ID, StatusCompleted)
		}
		wantIDs := ids(want)
		for _, limit := range []int{1, 3, 7, 40, 1000} {
			got := listAll(t, x, admin, ListOptions{AllOwners: true, Limit: limit})
			gotIDs := ids(got)
			require.ElementsMatch(t, wantIDs, gotIDs, "limit %d: every export once", limit)
			require.Len(t, gotIDs, len(wantIDs), "limit %d: listed twice", limit)
			// Newest first by the index's clock; on a Cluster a job's
			// CreatedAt is its own node's, written a moment later.
			for i := 1; i < len(got); i++ {
				require.False(t, got[i].CreatedAt.After(got[i-1].CreatedAt.Add(5*time.Millisecond)), "limit %d: not newest first at %d", limit, i)
			}
		}
		owners := map[string]bool{}
		for _, j := range listAll(t, x, admin, ListOptions{AllOwners: true, Limit: 50}) {
			owners[j.Owner] = true
		}
		require.Len(t, owners, 3)

		completed := listAll(t, x, admin, ListOptions{AllOwners: true, Limit: 4, Status: StatusCompleted})
		require.ElementsMatch(t, wantIDs, ids(completed))
		failed := listAll(t, x, admin, ListOptions{AllOwners: true, Limit: 4, Status: StatusFailed})
		require.Empty(t, failed)
		e.requireTTLs(t)
	})
}

// TestListStatusFilter: a listing filtered by status holds only that
// status, pages through all of them, and its pages are never longer than
// Limit; for an owner's list and every owner's.
func TestListStatusFilter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{ChunkSize: testChunk, AdminPermission: "exporter-admin"})
		ctx := testCtx(t)
		var cancelled, completed []string
		for i := range 12 {
			if i%3 == 0 {
				r, w := io.Pipe()
				job, err := x.StartExport(ctx, alice, r)
				require.NoError(t, err)
				_, err = x.CancelExport(ctx, alice, job.ID)
				require.NoError(t, err)
				w.Close()
				cancelled = append(cancelled, job.ID)
				continue
			}
			job, err := x.StartExport(ctx, alice, strings.NewReader(fmt.Sprint("export ", i)))
			require.NoError(t, err)
			waitFor(t, x, alice, job.ID, StatusCompleted)
			completed = append(completed, job.ID)
		}
		for _, opts := range []ListOptions{{}, {AllOwners: true}} {
			opts.Limit, opts.Status = 3, StatusCancelled
			user := alice
			if opts.AllOwners {
				user = admin
			}
			require.ElementsMatch(t, cancelled, ids(listAll(t, x, user, opts)))
			opts.Status = StatusCompleted
			require.ElementsMatch(t, completed, ids(listAll(t, x, user, opts)))
		}
		_, err := x.ListExports(ctx, alice, ListOptions{Status: "done"})
		require.ErrorIs(t, err, ErrInvalid)
	})
}

// TestListAllOwnersRefused: listing every owner's exports needs the admin
// permission; it cannot be mixed with Owner; a bad cursor is ErrInvalid,
// quoted but not echoed whole.
func TestListAllOwnersRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{AdminPermission: "exporter-admin"})
		ctx := testCtx(t)
		_, err := x.StartExport(ctx, alice, strings.NewReader("a"))
		require.NoError(t, err)
		_, err = x.ListExports(ctx, alice, ListOptions{AllOwners: true})
		require.ErrorIs(t, err, ErrForbidden)
		_, err = x.ListExports(ctx, admin, ListOptions{AllOwners: true, Owner: "alice"})
		require.ErrorIs(t, err, ErrInvalid)
		_, err = x.ListExports(ctx, admin, ListOptions{AllOwners: true, Cursor: strings.Repeat("9", 5000)})
		require.ErrorIs(t, err, ErrInvalid)
		require.Less(t, len(err.Error()), 300, "the cursor is echoed whole")

		noAdmin := e.exporter(t, Config{})
		_, err = noAdmin.ListExports(ctx, admin, ListOptions{AllOwners: true})
		require.ErrorIs(t, err, ErrForbidden)
	})
}

// TestListAllSkipsGone: entries of the cross-owner index whose job is gone
// (expired, or its creation never arrived) are skipped, and forgotten.
func TestListAllSkipsGone(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{AdminPermission: "exporter-admin"})
		ctx := testCtx(t)
		job, err := x.StartExport(ctx, alice, strings.NewReader("kept"))
		require.NoError(t, err)
		newer := time.Now().Add(time.Hour).UnixMilli()
		var gone []string
		for i := range 50 {
			id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
			gone = append(gone, id)
			require.NoError(t, e.client.ZAdd(ctx, e.store.allShardKey(i%allShards), redis.Z{Score: float64(newer + int64(i)), Member: id}).Err())
		}
		list, err := x.ListExports(ctx, admin, ListOptions{AllOwners: true, Limit: 10})
		require.NoError(t, err)
		require.Equal(t, []string{job.ID}, ids(list.Jobs))
		require.Empty(t, list.Next)
		for i, id := range gone {
			_, err := e.client.ZScore(ctx, e.store.allShardKey(i%allShards), id).Result()
			require.True(t, errors.Is(err, redis.Nil), "the gone job %s is still indexed", id)
		}
	})
}

// TestListAllSpreads: the cross-owner index spreads one owner's exports
// over its shards (no hot key), each shard holding a fair part.
func TestListAllSpreads(t *testing.T) {
	e := newEnv(t, "miniredis")
	x := e.exporter(t, Config{})
	ctx := testCtx(t)
	for range 320 {
		_, err := x.StartExport(ctx, alice, strings.NewReader("x"))
		require.NoError(t, err)
	}
	var sizes []int64
	for n := range allShards {
		c, err := e.client.ZCard(ctx, e.store.allShardKey(n)).Result()
		require.NoError(t, err)
		sizes = append(sizes, c)
	}
	t.Logf("entries per shard: %v", sizes)
	require.Greater(t, slices.Min(sizes), int64(5), "a shard is nearly empty: the ids do not spread")
	require.Less(t, slices.Max(sizes), int64(45), "a shard is hot: the ids do not spread")
}

// TestListAllNearTheOwnerIndex: on a Cluster, a creation writes the
// cross-owner index's shard on the master of the owner's index, so that
// its round trip reaches two nodes, not three; the owners' creations
// still spread over the shards.
func TestListAllNearTheOwnerIndex(t *testing.T) {
	e := newEnv(t, "cluster")
	x := e.exporter(t, Config{})
	ctx := testCtx(t)
	cc := e.client.(*redis.ClusterClient)
	master := func(key string) string {
		c, err := cc.MasterForKey(ctx, key)
		require.NoError(t, err)
		return c.Options().Addr
	}
	used := map[int]bool{}
	for i := range 60 {
		owner := User{ID: fmt.Sprintf("owner-%d", i%12), Permissions: []string{"exporter"}}
		job, err := x.StartExport(ctx, owner, strings.NewReader("x"))
		require.NoError(t, err)
		shard := -1
		for n := range allShards {
			if _, err := e.client.ZScore(ctx, e.store.allShardKey(n), job.ID).Result(); err == nil {
				require.Equal(t, -1, shard, "listed in two shards")
				shard = n
			}
		}
		require.NotEqual(t, -1, shard, "not in the cross-owner index")
		require.Equal(t, master(e.store.ownerKey(owner.ID)), master(e.store.allShardKey(shard)),
			"the shard is on another master than the owner's index")
		used[shard] = true
	}
	require.Greater(t, len(used), allShards/2, "the creations do not spread over the shards")
}

// emptyPages is a Store whose List answers every page with no job and a
// cursor to a next one.
type emptyPages struct {
	Store
	calls atomic.Int32
}

func (s *emptyPages) List(context.Context, string, string, int) ([]*Job, string, error) {
	s.calls.Add(1)
	return nil, "1:6b1f0bd4-6e4f-4b3f-9a2c-1f2e3d4c5b6a", nil
}

// TestListStatusFilterEmptyPages: a listing filtered by status stops at a
// page that lists nothing, even when the store says more follow, rather
// than asking it again without end.
func TestListStatusFilterEmptyPages(t *testing.T) {
	e := newEnv(t, "miniredis")
	store := &emptyPages{Store: e.store}
	x := e.exporterOn(t, store, Config{})
	done := make(chan error, 1)
	go func() { // owned: received from below
		_, err := x.ListExports(testCtx(t), alice, ListOptions{Status: StatusCompleted})
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatalf("the listing asked the store %d times and goes on", store.calls.Load())
	}
	require.Equal(t, int32(1), store.calls.Load())
}
