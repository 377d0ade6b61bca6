package redistest_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/exporterkit/exporter/internal/redistest"
)

// TestSentinelGroup starts a master, two replicas and three Sentinels,
// writes through a failover client, kills the master, and checks that the
// Sentinels promote a replica that holds the write, that the client
// follows it, and that the other replica follows it too.
func TestSentinelGroup(t *testing.T) {
	t.Parallel()
	g := redistest.StartSentinelGroupT(t, 2, 3)
	require.Len(t, g.Nodes, 3)
	require.Len(t, g.Sentinels, 3)
	require.Len(t, g.SentinelAddrs(), 3)
	for i, s := range g.Sentinels {
		require.Equal(t, s.Addr, g.SentinelAddrs()[i])
		require.FileExists(t, filepath.Join(s.Dir, "sentinel.conf"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // ctxT's 30 s is short for a retried election
	defer cancel()

	m, err := g.Master()
	require.NoError(t, err)
	require.Same(t, g.Nodes[0], m, "the first node starts as the master")
	role, err := newClient(t, g.Nodes[1]).Do(ctx, "ROLE").Slice()
	require.NoError(t, err)
	require.Equal(t, "slave", role[0])

	rdb := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:            g.MasterName(),
		SentinelAddrs:         g.SentinelAddrs(),
		ContextTimeoutEnabled: true,
		DialTimeout:           500 * time.Millisecond,
		ReadTimeout:           time.Second,
		WriteTimeout:          time.Second,
	})
	defer rdb.Close()
	require.NoError(t, rdb.Set(ctx, "k", "v", 0).Err())
	// Both replicas have the write before the kill, whichever is promoted.
	acks, err := rdb.Do(ctx, "WAIT", 2, 5000).Int()
	require.NoError(t, err)
	require.Equal(t, 2, acks)

	pid := m.PID()
	killed, err := g.KillMaster()
	require.NoError(t, err)
	require.Same(t, m, killed)
	requireGone(t, pid)
	start := time.Now()
	// About 2.3 s, unless the Sentinels split their votes: they try again
	// after twice the failover-timeout (10 s).
	fctx, cancelF := context.WithTimeout(ctx, 45*time.Second)
	defer cancelF()
	next, err := g.WaitFailover(fctx)
	require.NoError(t, err)
	require.NotSame(t, m, next)
	t.Logf("failover from %s to %s took %v after the kill", m.Addr, next.Addr, time.Since(start).Round(time.Millisecond))
	now, err := g.Master()
	require.NoError(t, err)
	require.Same(t, next, now)

	require.Eventually(t, func() bool {
		got, err := rdb.Get(ctx, "k").Result()
		return err == nil && got == "v"
	}, 10*time.Second, 50*time.Millisecond, "the failover client never read the write from the new master")
	require.NoError(t, rdb.Set(ctx, "after", "1", 0).Err())
	require.NoError(t, g.WaitReplicas(fctx, 1), "the remaining replica follows the new master")

	var pids []int
	for _, s := range append(g.Sentinels, g.Nodes...) {
		if pid := s.PID(); pid != 0 {
			pids = append(pids, pid)
		}
	}
	require.Len(t, pids, 5, "three sentinels and the two surviving nodes")
	require.NoError(t, rdb.Close())
	require.NoError(t, g.Stop())
	for _, pid := range pids {
		requireGone(t, pid)
	}
	for _, s := range append(g.Sentinels, g.Nodes...) {
		require.NoDirExists(t, s.Dir)
	}
	require.NoError(t, g.Stop(), "Stop is idempotent")
}

// TestFreezeThaw: a frozen replica falls behind its master and catches up
// when thawed.
func TestFreezeThaw(t *testing.T) {
	t.Parallel()
	master := redistest.StartT(t, redistest.Options{Args: []string{"--repl-diskless-sync-delay", "0"}})
	replica := redistest.StartT(t, redistest.Options{Args: []string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port)}})
	ctx := ctxT(t)
	mc, rc := newClient(t, master), newClient(t, replica)
	require.Eventually(t, func() bool {
		info, err := rc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	}, 10*time.Second, 20*time.Millisecond)

	require.NoError(t, replica.Freeze())
	require.NoError(t, mc.Set(ctx, "k", "v", 0).Err())
	acks, err := mc.Do(ctx, "WAIT", 1, 200).Int()
	require.NoError(t, err)
	require.Zero(t, acks, "a frozen replica acknowledges nothing")
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	frozen := redis.NewClient(&redis.Options{Addr: replica.Addr, ContextTimeoutEnabled: true})
	defer frozen.Close()
	require.Error(t, frozen.Ping(short).Err(), "a frozen server does not answer")

	require.NoError(t, replica.Thaw())
	require.Eventually(t, func() bool {
		got, err := rc.Get(ctx, "k").Result()
		return err == nil && got == "v"
	}, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, replica.Thaw(), "Thaw of a running server does nothing")
}

func TestSentinelGroupTooSmall(t *testing.T) {
	t.Parallel()
	for _, n := range [][2]int{{0, 3}, {1, 0}} {
		g, err := redistest.StartSentinelGroup(n[0], n[1])
		require.Error(t, err)
		require.Nil(t, g)
	}
}

// TestMissingSentinel runs with a PATH that has redis-server but not
// redis-sentinel. It cannot be parallel: it changes the process
// environment.
func TestMissingSentinel(t *testing.T) {
	bin, err := redistest.Binary()
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	require.NoError(t, os.Symlink(bin, filepath.Join(dir, "redis-server")))
	t.Setenv("PATH", dir)

	_, err = redistest.SentinelBinary()
	require.ErrorIs(t, err, redistest.ErrNotInstalled)
	require.ErrorContains(t, err, "redis-sentinel")
	_, err = redistest.StartSentinelGroup(1, 1)
	require.ErrorIs(t, err, redistest.ErrNotInstalled)

	for _, required := range []string{"", "1"} {
		t.Setenv("EXPORTER_REQUIRE_REDIS", required)
		rec := &recordingTB{}
		done := make(chan struct{})
		go func() {
			defer close(done)
			redistest.StartSentinelGroupT(rec, 1, 1)
			panic("StartSentinelGroupT returned without a group")
		}()
		<-done
		require.Equal(t, required == "", rec.skipped, "EXPORTER_REQUIRE_REDIS=%q", required)
		require.Equal(t, required == "1", rec.failed, "EXPORTER_REQUIRE_REDIS=%q", required)
		require.Contains(t, rec.msg, "apt-get install redis-server redis-tools redis-sentinel")
	}
}
