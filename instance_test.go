package exporter

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestInstances: every Exporter on a store reports itself; an admin sees
// each instance's runs by how they ended, its failures by code and the
// bytes it stored; an Exporter that shuts down removes its report, and a
// report that was not renewed (a killed instance) is dropped.
func TestInstances(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		cfg := Config{ChunkSize: testChunk, AdminPermission: "exporter-admin"}
		a, b := e.exporter(t, cfg), e.secondExporter(t, cfg)
		ctx := testCtx(t)
		done, err := a.StartExport(ctx, alice, strings.NewReader(strings.Repeat("x", 3*testChunk+5)))
		require.NoError(t, err)
		waitFor(t, a, alice, done.ID, StatusCompleted)
		broken, err := a.StartExport(ctx, alice, &failingReader{err: errors.New("connection reset")})
		require.NoError(t, err)
		waitFor(t, a, alice, broken.ID, StatusFailed)
		r, w := io.Pipe()
		defer w.Close()
		stopped, err := b.StartExport(ctx, bob, r)
		require.NoError(t, err)
		_, err = b.CancelExport(ctx, bob, stopped.ID)
		require.NoError(t, err)
		waitFor(t, b, bob, stopped.ID, StatusCancelled)

		byID := func() map[string]*Instance {
			list, err := b.Instances(ctx, admin)
			require.NoError(t, err)
			m := map[string]*Instance{}
			for _, in := range list {
				m[in.ID] = in
			}
			return m
		}
		require.Eventually(t, func() bool {
			m := byID()
			ia, ib := m[a.instanceID], m[b.instanceID]
			return len(m) == 2 && ia != nil && ib != nil && ia.Completed == 1 && ia.Failed == 1 && ib.Cancelled == 1
		}, 3*instanceEvery, 10*time.Millisecond, "the instances' reports")
		m := byID()
		ia, ib := m[a.instanceID], m[b.instanceID]
		require.Equal(t, int64(2), ia.Began)
		require.Equal(t, map[string]int64{CodeSource: 1}, ia.Failures)
		require.Equal(t, int64(3*testChunk+5), ia.BytesStored)
		require.Equal(t, int64(1), ib.Began)
		require.Zero(t, ib.Failed)
		require.Zero(t, ib.Running)
		require.NotEmpty(t, ia.Host)
		require.Positive(t, ia.PID)
		require.False(t, ia.Started.IsZero())
		require.Equal(t, cfg.withDefaults().MaxRunning, ia.MaxRunning)
		e.requireTTLs(t)

		_, err = a.Instances(ctx, alice)
		require.ErrorIs(t, err, ErrForbidden)
		_, err = a.Instances(ctx, anon)
		require.ErrorIs(t, err, ErrUnauthenticated)

		// A shut down instance removes its report.
		require.NoError(t, a.Shutdown(ctx))
		m = byID()
		require.NotContains(t, m, a.instanceID)
		require.Contains(t, m, b.instanceID)

		// A report that lapsed (its instance was killed) is dropped, and
		// removed from the store.
		dead := &Instance{ID: "dead-1-x", Host: "dead", Seen: time.Now()}
		require.NoError(t, e.store.ReportInstance(ctx, dead, 50*time.Millisecond))
		require.Contains(t, byID(), dead.ID)
		e.elapse(100 * time.Millisecond)
		require.NotContains(t, byID(), dead.ID)
		n, err := e.client.HExists(ctx, e.store.instancesKey(), dead.ID).Result()
		require.NoError(t, err)
		require.False(t, n, "the lapsed report is still stored")

		// An instance whose clock is an hour behind is not taken for
		// lapsed: a report lapses by the store's clock.
		skewed := &Instance{ID: "skewed-1-x", Host: "skewed", Seen: time.Now().Add(-time.Hour)}
		require.NoError(t, e.store.ReportInstance(ctx, skewed, instanceTTL))
		require.Contains(t, byID(), skewed.ID)
	})
}

// TestCheckAdmin: CheckAdmin passes holders of Config.AdminPermission
// only; without the setting nobody is an admin.
func TestCheckAdmin(t *testing.T) {
	e := newEnv(t, "miniredis")
	x := e.exporter(t, Config{AdminPermission: "exporter-admin"})
	ctx := testCtx(t)
	require.NoError(t, x.CheckAdmin(ctx, admin))
	require.ErrorIs(t, x.CheckAdmin(ctx, alice), ErrForbidden)
	require.ErrorIs(t, x.CheckAdmin(ctx, anon), ErrUnauthenticated)
	none := e.exporter(t, Config{})
	require.ErrorIs(t, none.CheckAdmin(ctx, admin), ErrForbidden)
}
