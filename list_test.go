package exporter

import (
	"fmt"
	"strings"
	"testing"
	"time"

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
