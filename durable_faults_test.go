package exporter

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exporterkit/exporter/internal/redistest"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestDurableRedisRestarted kills the Redis server (AOF, fsync always)
// while ten durable exports run, and restarts it after longer than their
// lease: the attempts that lost the store lapse or fail, the queue
// resumes them from what the server kept, and every export completes with
// the bytes and checksum of an uninterrupted run.
func TestDurableRedisRestarted(t *testing.T) {
	faultNoLeaks(t)
	srv := redistest.StartT(t, redistest.Options{Args: []string{"--appendonly", "yes", "--appendfsync", "always"}})
	const lease = 500 * time.Millisecond
	var read atomic.Int64
	src := func(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
		seed, size := parseDurableArgs(t, job.Args)
		return &countingReader{r: &pacedReader{r: &patternReader{seed: seed, off: offset, size: size}, ctx: ctx}, n: &read}, nil
	}
	cfg := Config{ChunkSize: testChunk, LeaseTTL: lease, MaxRunning: 16, Sources: map[string]Source{"rows": src}}
	x := faultExporter(t, NewRedisStore(faultClient(t, srv.Addr)).WithPrefix("dkill:"), cfg)
	ctx := testCtx(t)
	const n, size = 10, 100 * testChunk
	var ids []string
	for i := range n {
		job, err := x.Enqueue(ctx, alice, "rows", durableArgs(byte(i+1), size))
		require.NoError(t, err)
		ids = append(ids, job.ID)
	}
	require.Eventually(t, func() bool { return read.Load() >= n*20*testChunk }, 30*time.Second, time.Millisecond)
	require.NoError(t, srv.Kill())
	time.Sleep(3 * lease) // every lease lapses meanwhile
	require.NoError(t, srv.Restart())

	attempts := 0
	for i, id := range ids {
		got := requireDurableDone(t, x, alice, &Job{ID: id}, byte(i+1), size)
		attempts += got.Attempt
	}
	t.Logf("%d exports completed in %d attempts", n, attempts)
	faultRequireTTLs(t, faultClient(t, srv.Addr), "dkill:")
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestDurableClaimLost: a claimer takes an export from its queue and is
// gone before it begins the attempt (its process died, or its connection
// was cut right after the claim script ran; the test plays that claimer
// by running the claim script itself). The queue tracks an attempt that
// never took the job's lease: the recoverer of another instance finds it
// lapsed and queues the export again, which then runs once, to
// completion, and the owner's count of running attempts returns to zero.
func TestDurableClaimLost(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		const size = 7*testChunk + 3
		job, err := e.store.Enqueue(ctx, &Job{ID: uuid.NewString(), Owner: alice.ID, Status: StatusPending, ChunkSize: testChunk,
			Kind: "rows", Args: durableArgs(4, size)}, newToken(), 3, time.Hour)
		require.NoError(t, err)
		n := shardOf(ownerHash(alice.ID))
		tag, keys := e.store.shard(n)
		const lease = 300 * time.Millisecond
		res, err := e.store.runShard(ctx, scriptQueueClaim, n, 0, []string{tag + "ready:rows"},
			0, lease.Milliseconds(), 1000, 1, newToken(), "rows")
		require.NoError(t, err)
		require.Equal(t, "ok", res[0])
		require.Equal(t, job.ID, res[1])

		calls := &sourceCalls{}
		x := e.exporter(t, Config{ChunkSize: testChunk, LeaseTTL: lease, Sources: map[string]Source{"rows": seekingSource(t, calls, nil, 0)}})
		if e.mr != nil {
			// miniredis's clock stands still: let the tracked attempt's
			// check come due.
			e.elapse(lease)
		}
		got := requireDurableDone(t, x, alice, job, 4, size)
		require.Equal(t, 1, got.Attempt, "the lost claim never began an attempt")
		require.Equal(t, []int64{0}, calls.of(job.ID))
		require.Eventually(t, func() bool {
			n, err := e.client.HLen(ctx, keys[1]).Result()
			return err == nil && n == 0
		}, 10*time.Second, time.Millisecond, "the owner's count of running attempts leaked")
		e.requireTTLs(t)
	})
}

// TestDurableLateRelease: an attempt releases its export (its source
// failed) and the recoverer, finding the lease gone before the release's
// second step (the push on the queue shard) arrives, queues the export
// again, and another attempt claims it. The release's push, applied late,
// changes nothing: the new attempt stays tracked and counted once, and
// the export is not queued a second time beside it.
func TestDurableLateRelease(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		job, err := e.store.Enqueue(ctx, &Job{ID: uuid.NewString(), Owner: alice.ID, Status: StatusPending, ChunkSize: testChunk,
			Kind: "rows"}, newToken(), 3, time.Hour)
		require.NoError(t, err)
		const lease = 300 * time.Millisecond
		first := Lease{Token: newToken(), TTL: lease}
		c, err := e.store.Claim(ctx, []string{"rows"}, 0, []Lease{first})
		require.NoError(t, err)
		require.Len(t, c, 1)

		// The release's first step, on the job: its lease is given up.
		res, err := scriptRelease.Run(ctx, e.client, e.store.keys(job.ID), e.store.eventsChannel(), first.Token,
			"retry", "timeout", CodeSource).Slice()
		require.NoError(t, err)
		require.Equal(t, "ok", res[0])
		// The recoverer finds the lease gone, and the export is claimed again.
		e.elapse(lease + 100*time.Millisecond)
		require.Eventually(t, func() bool {
			n, err := e.store.Recover(ctx)
			require.NoError(t, err)
			e.elapse(50 * time.Millisecond)
			return n == 1
		}, 10*time.Second, time.Millisecond)
		second := Lease{Token: newToken(), TTL: time.Minute}
		c, err = e.store.Claim(ctx, []string{"rows"}, 0, []Lease{second})
		require.NoError(t, err)
		require.Len(t, c, 1)
		require.Equal(t, 2, c[0].Job.Attempt)

		// The release's second step arrives late.
		h := ownerHash(alice.ID)
		require.NoError(t, e.store.push(ctx, h, "rows", job.ID, 0, first.Token, time.Hour))

		tag, keys := e.store.shard(shardOf(h))
		info, err := e.client.HGet(ctx, keys[2], job.ID).Result()
		require.NoError(t, err, "the new attempt is no longer tracked")
		require.Contains(t, info, second.Token)
		count, err := e.client.HGet(ctx, keys[1], h).Result()
		require.NoError(t, err)
		require.Equal(t, "1", count, "the owner's count of running attempts")
		_, err = e.client.ZScore(ctx, tag+"jobs:rows:"+h, job.ID).Result()
		require.ErrorIs(t, err, redis.Nil, "the running export was queued again")
		c, err = e.store.Claim(ctx, []string{"rows"}, 0, []Lease{{Token: newToken(), TTL: time.Minute}})
		require.NoError(t, err)
		require.Empty(t, c, "the running export was claimed a second time")
	})
}

// TestDurableEnqueueDies: an enqueuing process dies half way through its
// Enqueue on a Cluster, after its job's node got its commands and before
// the queue shard's node got any (the two are different connections, so a
// death between them is possible). The export must not be left recorded
// but never queued: a restarted instance either runs it or never sees it.
func TestDurableEnqueueDies(t *testing.T) {
	e := newEnv(t, "cluster")
	ctx := testCtx(t)
	dying := e.newClient(t)
	// The scripts are loaded already, as on a server that ran for a while
	// (else the death would come at a NOSCRIPT's reload).
	require.NoError(t, dying.(*redis.ClusterClient).ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		for _, s := range []*redis.Script{scriptEnqueue, scriptQueuePush} {
			if err := s.Load(ctx, c).Err(); err != nil {
				return err
			}
		}
		return nil
	}))
	death := &dieAtQueue{}
	dying.AddHook(death)
	const size = 3*testChunk + 1
	job := &Job{ID: uuid.NewString(), Owner: alice.ID, Status: StatusPending, ChunkSize: testChunk,
		Kind: "rows", Args: durableArgs(6, size)}
	_, err := NewRedisStore(dying).WithPrefix(e.prefix).Enqueue(ctx, job, newToken(), 3, time.Hour)
	require.ErrorIs(t, err, errDied)
	require.True(t, death.dead.Load(), "the enqueue never reached the queue shard")

	calls := &sourceCalls{}
	x := e.exporter(t, Config{ChunkSize: testChunk, Sources: map[string]Source{"rows": seekingSource(t, calls, nil, 0)}})
	deadline := time.Now().Add(3 * time.Second)
	for {
		got, err := x.GetExportStatus(ctx, alice, job.ID)
		if errors.Is(err, ErrNotFound) {
			return // never recorded: the dead caller was told nothing
		}
		require.NoError(t, err)
		if got.Status == StatusCompleted {
			require.Equal(t, patternSum(6, size), got.Checksum)
			return
		}
		require.True(t, time.Now().Before(deadline), "the export is recorded %s but nothing runs it", got.Status)
		time.Sleep(10 * time.Millisecond)
	}
}

// errDied is what a dieAtQueue client's commands fail with once it died.
var errDied = errors.New("the process died")

// dieAtQueue is a go-redis hook that plays a process dying as it sends
// its first command to a queue shard: that command and every later one
// are never sent. The commands of a pipeline that go elsewhere are sent,
// as a Cluster client sends each node's share on its own connection.
type dieAtQueue struct{ dead atomic.Bool }

func (h *dieAtQueue) queue(cmd redis.Cmder) bool {
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && strings.HasSuffix(s, "}:active") {
			return true
		}
	}
	return false
}

func (h *dieAtQueue) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *dieAtQueue) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.dead.Load() || h.queue(cmd) {
			h.dead.Store(true)
			cmd.SetErr(errDied)
			return errDied
		}
		return next(ctx, cmd)
	}
}

func (h *dieAtQueue) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var sent []redis.Cmder
		for _, c := range cmds {
			if h.dead.Load() || h.queue(c) {
				h.dead.Store(true)
				c.SetErr(errDied)
			} else {
				sent = append(sent, c)
			}
		}
		if len(sent) > 0 {
			if err := next(ctx, sent); err != nil {
				return err
			}
		}
		if len(sent) < len(cmds) {
			return errDied
		}
		return nil
	}
}
