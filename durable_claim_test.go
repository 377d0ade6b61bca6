package exporter

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// The claimer's timing: an idle claimer polls the queue every claimPoll
// (a second), but an export it knows will be ready sooner (a retry's
// delay, a job whose creation trails its push on a Cluster) is claimed
// when it is ready. These run on real servers only: miniredis's clock,
// which the queue's scores are read from, stands still.

// startedAt is a Source of pattern bytes that reports when it was opened.
func startedAt(t *testing.T, opened chan<- time.Time) Source {
	return func(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
		select {
		case opened <- time.Now():
		default:
		}
		seed, size := parseDurableArgs(t, job.Args)
		return &patternReader{seed: seed, off: offset, size: size}, nil
	}
}

// TestDurableRetryClaimedWhenDue: an export released for a retry 300 ms
// later is claimed by an idle instance when those 300 ms are over, not at
// its next poll a second later.
func TestDurableRetryClaimedWhenDue(t *testing.T) {
	for _, name := range []string{"redis", "cluster"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, name)
			ctx := testCtx(t)
			other := NewRedisStore(e.newClient(t)).WithPrefix(e.prefix) // the instance whose attempt failed
			const size = 3 * testChunk
			job, err := other.Enqueue(ctx, &Job{ID: uuid.NewString(), Owner: alice.ID, Status: StatusPending, ChunkSize: testChunk,
				Kind: "rows", Args: durableArgs(2, size)}, newToken(), 3, time.Hour)
			require.NoError(t, err)
			lease := Lease{Token: newToken(), TTL: time.Minute}
			c, err := other.Claim(ctx, []string{"rows"}, 0, []Lease{lease})
			require.NoError(t, err)
			require.Len(t, c, 1)

			const delay = 300 * time.Millisecond
			opened := make(chan time.Time, 1)
			x := e.exporter(t, Config{ChunkSize: testChunk, Sources: map[string]Source{"rows": startedAt(t, opened)}})
			// Let x's claimer find the queue empty first, and go idle.
			time.Sleep(50 * time.Millisecond)
			released := time.Now()
			require.NoError(t, other.Release(ctx, c[0].Job, lease, &Reason{Text: "timeout", Code: CodeSource}, delay))

			var began time.Time
			select {
			case began = <-opened:
			case <-time.After(5 * time.Second):
				t.Fatal("the retry never began")
			}
			t.Logf("the retry began %v after its release with a delay of %v", began.Sub(released), delay)
			require.GreaterOrEqual(t, began.Sub(released), delay-20*time.Millisecond, "the retry began before its delay")
			// Within its delay and half the poll: the claimer woke for it.
			require.Less(t, began.Sub(released), delay+claimPoll/2, "the idle claimer only found the retry at its next poll")
			got := requireDurableDone(t, x, alice, job, 2, size)
			require.Equal(t, 2, got.Attempt)
		})
	}
}

// TestDurableJobAfterItsPush: on a Cluster, Enqueue queues an id before
// its job is recorded on another node, so a claimer can take the id
// before the job exists. It queues it again, soon: the export runs
// promptly once its job is recorded, not at the claimer's next poll.
func TestDurableJobAfterItsPush(t *testing.T) {
	for _, name := range []string{"redis", "cluster"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, name)
			ctx := testCtx(t)
			opened := make(chan time.Time, 1)
			x := e.exporter(t, Config{ChunkSize: testChunk, Sources: map[string]Source{"rows": startedAt(t, opened)}})
			time.Sleep(50 * time.Millisecond) // x's claimer finds the queue empty

			const size = 2 * testChunk
			const retention = time.Hour
			job := &Job{ID: uuid.NewString(), Owner: alice.ID, Status: StatusPending, ChunkSize: testChunk,
				Kind: "rows", Args: durableArgs(5, size)}
			h, n := ownerHash(alice.ID), shardOf(ownerHash(alice.ID))
			tag, _ := e.store.shard(n)
			// The push, announced so that x claims the id at once, finds
			// no job and queues it again.
			_, err := e.store.runShard(ctx, scriptQueuePush, n, 2*retention, nil, job.ID, h, "rows", 0, "", e.store.eventsChannel(), n)
			require.NoError(t, err)
			require.Eventually(t, func() bool {
				ok, err := e.client.HExists(ctx, tag+"born", job.ID).Result()
				return err == nil && ok
			}, 5*time.Second, time.Millisecond, "no claim found the id without its job")

			// The creation arrives, unannounced.
			time.Sleep(100 * time.Millisecond)
			fields, err := encodeJob(job, retention)
			require.NoError(t, err)
			args := append([]any{e.store.eventsChannel(), newToken(), retention.Milliseconds(), 3}, fields...)
			res, err := scriptEnqueue.Run(ctx, e.client, e.store.keys(job.ID), args...).Slice()
			require.NoError(t, err)
			require.Equal(t, "ok", res[0])
			created := time.Now()

			var began time.Time
			select {
			case began = <-opened:
			case <-time.After(5 * time.Second):
				t.Fatal("the export never began")
			}
			t.Logf("the export began %v after its job was recorded", began.Sub(created))
			require.Less(t, began.Sub(created), claimPoll/2, "the export waited for the claimer's next poll")
			got := requireDurableDone(t, x, alice, job, 5, size)
			require.Equal(t, 1, got.Attempt)
			ok, err := e.client.HExists(ctx, tag+"born", job.ID).Result()
			require.NoError(t, err)
			require.False(t, ok, "the claim that began the export left its first-queued time behind")
		})
	}
}

// TestDurableOrphanDropped: an id queued by an enqueuer that died before
// recording its job (a Cluster) is dropped by the claims once enqueueGrace
// has passed since it was first queued, however often they queued it
// again meanwhile; nothing of it stays in the shard.
func TestDurableOrphanDropped(t *testing.T) {
	e := newEnv(t, "redis")
	ctx := testCtx(t)
	e.exporter(t, Config{ChunkSize: testChunk, Sources: map[string]Source{"rows": startedAt(t, make(chan time.Time))}})
	id := uuid.NewString()
	h, n := ownerHash(alice.ID), shardOf(ownerHash(alice.ID))
	tag, keys := e.store.shard(n)
	queued := time.Now()
	_, err := e.store.runShard(ctx, scriptQueuePush, n, 2*time.Hour, nil, id, h, "rows", 0, "", e.store.eventsChannel(), n)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		ok, err := e.client.HExists(ctx, tag+"born", id).Result()
		return err == nil && ok
	}, 5*time.Second, time.Millisecond, "no claim found the id without its job")
	require.Eventually(t, func() bool {
		// One transaction: a claim in its course moves the id from the
		// queue to the tracked attempts (info) and back.
		var q, born *redis.IntCmd
		var claimed *redis.BoolCmd
		_, err := e.client.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			q = pipe.Exists(ctx, tag+"jobs:rows:"+h, tag+"ready:rows")
			born = pipe.HLen(ctx, tag+"born")
			claimed = pipe.HExists(ctx, keys[2], id)
			return nil
		})
		require.NoError(t, err)
		return q.Val() == 0 && born.Val() == 0 && !claimed.Val()
	}, enqueueGrace+3*time.Second, 10*time.Millisecond, "the orphan id is still queued")
	require.GreaterOrEqual(t, time.Since(queued), enqueueGrace-100*time.Millisecond, "the id was dropped before its grace")
	e.requireTTLs(t)
}
