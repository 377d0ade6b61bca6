package redistest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/exporterkit/exporter/internal/redistest"
)

// newClient returns a go-redis client for s that is closed when t ends.
func newClient(t *testing.T, s *redistest.Server) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// requireGone checks that no process has the id pid any more: it exited
// and was reaped.
func requireGone(t *testing.T, pid int) {
	t.Helper()
	require.NotZero(t, pid)
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "pid %d still exists", pid)
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStandalone(t *testing.T) {
	t.Parallel()
	s := redistest.StandaloneT(t)
	ctx := ctxT(t)
	rdb := newClient(t, s)

	require.Equal(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)), s.Addr)
	require.NoError(t, rdb.Ping(ctx).Err())
	require.NoError(t, rdb.Set(ctx, "k", "v", 0).Err())
	got, err := rdb.Get(ctx, "k").Result()
	require.NoError(t, err)
	require.Equal(t, "v", got)

	cfg, err := rdb.ConfigGet(ctx, "*").Result()
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", cfg["bind"])
	require.Empty(t, cfg["save"])
	require.Equal(t, s.Dir, cfg["dir"])
	require.FileExists(t, filepath.Join(s.Dir, "redis.log"))
}

func TestStop(t *testing.T) {
	t.Parallel()
	s, err := redistest.Start(redistest.Options{})
	require.NoError(t, err)
	pid := s.PID()
	require.DirExists(t, s.Dir)

	require.NoError(t, s.Stop())
	requireGone(t, pid)
	require.Zero(t, s.PID())
	require.NoDirExists(t, s.Dir, "a directory Start created is removed")
	require.NoError(t, s.Stop(), "Stop is idempotent")
	require.Error(t, s.Restart(), "a stopped server cannot restart")
	require.NoError(t, s.Kill())
}

func TestStopKeepsCallerDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := redistest.Start(redistest.Options{Dir: dir})
	require.NoError(t, err)
	require.Equal(t, dir, s.Dir)
	require.NoError(t, s.Stop())
	require.FileExists(t, filepath.Join(dir, "redis.log"))
}

func TestKillRestartAppendOnly(t *testing.T) {
	t.Parallel()
	s := redistest.StartT(t, redistest.Options{Args: []string{"--appendonly", "yes", "--appendfsync", "always"}})
	ctx := ctxT(t)
	port, dir := s.Port, s.Dir

	rdb := newClient(t, s)
	require.NoError(t, rdb.Set(ctx, "survivor", "42", 0).Err())
	require.NoError(t, rdb.Close())

	pid := s.PID()
	require.NoError(t, s.Kill())
	requireGone(t, pid)
	require.Zero(t, s.PID())
	_, err := net.DialTimeout("tcp", s.Addr, time.Second)
	require.Error(t, err, "nothing listens after Kill")

	require.NoError(t, s.Restart())
	require.Equal(t, port, s.Port)
	require.Equal(t, dir, s.Dir)
	require.NotEqual(t, pid, s.PID())

	got, err := newClient(t, s).Get(ctx, "survivor").Result()
	require.NoError(t, err, "an fsynced write survives SIGKILL")
	require.Equal(t, "42", got)

	// Restart of a running server stops it gracefully first.
	pid = s.PID()
	require.NoError(t, s.Restart())
	requireGone(t, pid)
	got, err = newClient(t, s).Get(ctx, "survivor").Result()
	require.NoError(t, err)
	require.Equal(t, "42", got)
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	held, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = held.Close() }) // not defer: the subtests run after this function returns
	heldPort := held.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name string
		opts redistest.Options
		want string // in the error, from the server's log
	}{
		{"bad argument", redistest.Options{Args: []string{"--no-such-directive", "x"}}, "Bad directive"},
		{"port in use", redistest.Options{Port: heldPort}, "Address already in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := redistest.Start(tt.opts)
			if s != nil {
				_ = s.Stop()
			}
			require.Error(t, err)
			require.Nil(t, s)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartClusterT(t, 3)
	require.Len(t, c.Nodes, 3)
	require.Len(t, c.Addrs, 3)
	ctx := ctxT(t)

	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	defer rdb.Close()
	keys := make(map[string]string)
	for i := range 30 {
		keys[fmt.Sprintf("key-%d", i)] = strconv.Itoa(i)
	}
	for k, v := range keys {
		require.NoError(t, rdb.Set(ctx, k, v, 0).Err())
	}
	for k, v := range keys {
		got, err := rdb.Get(ctx, k).Result()
		require.NoError(t, err)
		require.Equal(t, v, got)
	}

	// The keys spread over the masters: each holds some, none holds all.
	var total int64
	for _, s := range c.Nodes {
		n, err := newClient(t, s).DBSize(ctx).Result()
		require.NoError(t, err)
		require.Positive(t, n, "node %s holds none of the keys", s.Addr)
		total += n
	}
	require.Equal(t, int64(len(keys)), total)
	require.NoError(t, rdb.Close())

	var pids []int
	for _, s := range c.Nodes {
		pids = append(pids, s.PID())
	}
	require.NoError(t, c.Stop())
	for _, pid := range pids {
		requireGone(t, pid)
	}
	require.NoError(t, c.Stop(), "Stop is idempotent")
}

func TestClusterTooSmall(t *testing.T) {
	t.Parallel()
	c, err := redistest.StartCluster(2)
	require.Error(t, err)
	require.Nil(t, c)
}

// recordingTB stands in for testing.TB to observe how the T helpers end a
// test. Skip and Fatal end the calling goroutine, as the real ones do; any
// method it does not override panics on the nil embedded TB.
type recordingTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recordingTB) Helper()        {}
func (r *recordingTB) Cleanup(func()) {}
func (r *recordingTB) Skip(args ...any) {
	r.skipped, r.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recordingTB) Fatal(args ...any) {
	r.failed, r.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

// TestMissingRedis runs with an empty PATH, so no redis binary is found.
// It cannot be parallel: it changes the process environment.
func TestMissingRedis(t *testing.T) {
	t.Setenv("PATH", t.TempDir())

	_, err := redistest.Binary()
	require.ErrorIs(t, err, redistest.ErrNotInstalled)
	require.ErrorContains(t, err, "apt-get install redis-server")
	require.ErrorContains(t, err, "make test")

	_, err = redistest.Start(redistest.Options{})
	require.ErrorIs(t, err, redistest.ErrNotInstalled)
	_, err = redistest.StartCluster(3)
	require.ErrorIs(t, err, redistest.ErrNotInstalled)

	helpers := map[string]func(testing.TB){
		"StartT":        func(tb testing.TB) { redistest.StartT(tb, redistest.Options{}) },
		"StandaloneT":   func(tb testing.TB) { redistest.StandaloneT(tb) },
		"StartClusterT": func(tb testing.TB) { redistest.StartClusterT(tb, 3) },
	}
	tests := []struct {
		name     string
		required string
		wantSkip bool
	}{
		{"skips when not required", "", true},
		{"fails when required", "1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("EXPORTER_REQUIRE_REDIS", tt.required)
			for name, helper := range helpers {
				rec := &recordingTB{}
				done := make(chan struct{})
				go func() {
					defer close(done)
					helper(rec)
					panic("helper returned without a server")
				}()
				<-done
				require.Equal(t, tt.wantSkip, rec.skipped, name)
				require.Equal(t, !tt.wantSkip, rec.failed, name)
				require.Contains(t, rec.msg, "apt-get install redis-server", name)
			}
		})
	}
}

// TestFailedStartRemovesDir checks that a failed start removes the
// temporary directory it created. It cannot be parallel: it sets TMPDIR.
func TestFailedStartRemovesDir(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	_, err := redistest.Start(redistest.Options{Args: []string{"--no-such-directive", "x"}})
	require.Error(t, err)
	entries, err := os.ReadDir(os.Getenv("TMPDIR"))
	require.NoError(t, err)
	require.Empty(t, entries)
	require.False(t, errors.Is(err, redistest.ErrNotInstalled))
}
