package exporter

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestListExports pages through an owner's exports newest first, keeps
// owners apart, lets admins list anyone's, and skips and forgets exports
// that expired.
func TestListExports(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{AdminPermission: "exporter-admin"})
		ctx := testCtx(t)
		var mine []string
		for i := range 7 {
			job, err := x.StartExport(ctx, alice, strings.NewReader(fmt.Sprint("export ", i)))
			require.NoError(t, err)
			mine = append(mine, job.ID)
			time.Sleep(2 * time.Millisecond) // distinct creation times for most
		}
		for range 2 {
			_, err := x.StartExport(ctx, bob, strings.NewReader("bob's"))
			require.NoError(t, err)
		}
		var listed []string
		cursor := ""
		for page := 0; ; page++ {
			require.Less(t, page, 5, "pagination does not end")
			list, err := x.ListExports(ctx, alice, ListOptions{Limit: 3, Cursor: cursor})
			require.NoError(t, err)
			require.LessOrEqual(t, len(list.Jobs), 3)
			for _, j := range list.Jobs {
				require.Equal(t, alice.ID, j.Owner)
				listed = append(listed, j.ID)
			}
			if cursor = list.Next; cursor == "" {
				break
			}
		}
		want := make([]string, len(mine))
		for i, id := range mine {
			want[len(mine)-1-i] = id
		}
		require.Equal(t, want, listed, "newest first, each once")

		list, err := x.ListExports(ctx, bob, ListOptions{})
		require.NoError(t, err)
		require.Len(t, list.Jobs, 2)
		_, err = x.ListExports(ctx, bob, ListOptions{Owner: alice.ID})
		require.ErrorIs(t, err, ErrForbidden)
		list, err = x.ListExports(ctx, admin, ListOptions{Owner: alice.ID, Limit: 100})
		require.NoError(t, err)
		require.Len(t, list.Jobs, 7)
		_, err = x.ListExports(ctx, anon, ListOptions{})
		require.ErrorIs(t, err, ErrUnauthenticated)
		for _, opts := range []ListOptions{{Limit: -1}, {Limit: MaxListLimit + 1}, {Cursor: "x"}, {Cursor: "1:nope"}} {
			_, err = x.ListExports(ctx, alice, opts)
			require.ErrorIs(t, err, ErrInvalid, "%+v", opts)
		}

		// An export that expired is skipped and its index entry forgotten.
		for _, id := range mine[:2] {
			require.NoError(t, e.client.Del(ctx, e.store.keys(id)...).Err())
		}
		list, err = x.ListExports(ctx, alice, ListOptions{Limit: 100})
		require.NoError(t, err)
		require.Len(t, list.Jobs, 5)
		n, err := e.client.ZCard(ctx, e.store.ownerKey(alice.ID)).Result()
		require.NoError(t, err)
		require.Equal(t, int64(5), n)
		e.requireTTLs(t)
	})
}

// TestListSkipsNothingLive lists an owner whose newest index entries all
// belong to jobs that are gone, with an older job still live: the first
// page holds that job, and the entries of the gone ones are forgotten.
// (List used to count the entries it removed in its offset, and skipped
// as many live ones: the page came back empty, with no next cursor.)
func TestListSkipsNothingLive(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{})
		ctx := testCtx(t)
		job, err := x.StartExport(ctx, alice, strings.NewReader("kept"))
		require.NoError(t, err)
		index := e.store.ownerKey(alice.ID)
		newer := time.Now().Add(time.Hour).UnixMilli()
		for i := range 100 {
			gone := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
			require.NoError(t, e.client.ZAdd(ctx, index, redis.Z{Score: float64(newer + int64(i)), Member: gone}).Err())
		}
		list, err := x.ListExports(ctx, alice, ListOptions{Limit: 10})
		require.NoError(t, err)
		require.Len(t, list.Jobs, 1)
		require.Equal(t, job.ID, list.Jobs[0].ID)
		require.Empty(t, list.Next)
		n, err := e.client.ZCard(ctx, index).Result()
		require.NoError(t, err)
		require.Equal(t, int64(1), n, "the gone jobs' entries are forgotten")
	})
}

// TestShortRetentionKeepsOthersListed runs two instances on one store, one
// with a Retention of a day and one, as in a rolling deploy that lowers
// it, of 300 ms. The second one's exports must not trim the first one's
// from the listing, nor let the index expire before them: the day-long
// export stays listed for as long as it exists.
func TestShortRetentionKeepsOthersListed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		long := e.exporter(t, Config{})
		short := e.secondExporter(t, Config{Retention: 300 * time.Millisecond, LeaseTTL: 100 * time.Millisecond})
		kept, err := long.StartExport(ctx, alice, strings.NewReader("kept a day"))
		require.NoError(t, err)
		waitFor(t, long, alice, kept.ID, StatusCompleted)
		e.elapse(700 * time.Millisecond)
		brief, err := short.StartExport(ctx, alice, strings.NewReader("kept 300 ms"))
		require.NoError(t, err)
		waitFor(t, short, alice, brief.ID, StatusCompleted)
		e.elapse(1500 * time.Millisecond) // past the short one's index TTL of old

		list, err := short.ListExports(ctx, alice, ListOptions{})
		require.NoError(t, err)
		var ids []string
		for _, j := range list.Jobs {
			ids = append(ids, j.ID)
		}
		require.Equal(t, []string{kept.ID}, ids, "the day-long export is listed; the brief one expired")
		ttl, err := e.client.PTTL(ctx, e.store.ownerKey(alice.ID)).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, 24*time.Hour, "the index outlives the day-long export")
	})
}

// TestCreatePrunesOnlyGoneJobs gives an owner's index old entries, of jobs
// that are gone and of one that lives (a day's Retention): the next
// StartExport of that owner, on an instance with a Retention of 200 ms,
// removes the gone ones and only those, so the index of an owner who never
// lists stays bounded without dropping a live job.
func TestCreatePrunesOnlyGoneJobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{})
		short := e.secondExporter(t, Config{Retention: 200 * time.Millisecond, LeaseTTL: 100 * time.Millisecond})
		ctx := testCtx(t)
		live, err := x.StartExport(ctx, alice, strings.NewReader("lives on"))
		require.NoError(t, err)
		waitFor(t, x, alice, live.ID, StatusCompleted)
		index := e.store.ownerKey(alice.ID)
		old := float64(time.Now().Add(-time.Hour).UnixMilli())
		require.NoError(t, e.client.ZAdd(ctx, index, redis.Z{Score: old, Member: live.ID}).Err())
		for i := range 5 {
			gone := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
			require.NoError(t, e.client.ZAdd(ctx, index, redis.Z{Score: old - float64(i), Member: gone}).Err())
		}
		fresh, err := short.StartExport(ctx, alice, strings.NewReader("new"))
		require.NoError(t, err)
		members, err := e.client.ZRange(ctx, index, 0, -1).Result()
		require.NoError(t, err)
		require.ElementsMatch(t, []string{live.ID, fresh.ID}, members)
	})
}
