package exporter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The durable queue on Redis (Queue). An owner's durable exports wait in
// one of queueShards shards, picked by the owner's hash; a shard's keys
// share the hash tag {q<n>} (see lua/queue.lua), so a claim, the owner's
// count of running attempts (MaxPerUser, across instances) and the
// attempts it tracks for recovery change in one script on one Cluster
// slot. A claim reads a shard's ready owners and one owner's queue: a
// bounded number of keys, and no scan of the keyspace.
//
// A job and its shard live in different slots, so each step that touches
// both is two scripts, ordered so that a crash between them leaves what
// the recoverer repairs: a claim tracks the attempt before it takes the
// job's lease (a claim whose job is gone is settled; an attempt whose
// lease lapses is queued again), and an enqueue queues the id, ready
// after enqueueGrace, before it records the job (an id whose job never
// came is dropped by its claim).

// queueShards is how many shards the queue has: enough to spread the
// queues of a busy service over the masters of a Cluster, few enough that
// an idle claimer's probe of every shard costs little.
const queueShards = 16

// enqueueGrace is how long an enqueued id waits before it may be claimed
// unless Enqueue marks it ready: Enqueue does, as soon as the job is
// recorded; the grace covers the job's own write.
const enqueueGrace = 5 * time.Second

// queueMinTTL is the least TTL of a shard's keys; every write extends them
// to at least twice the retention of the export it queues.
const queueMinTTL = 24 * time.Hour

// recheck is how long the recoverer that took an attempt's check (see
// lua/queue_due.lua) has before another may take it.
const recheck = 5 * time.Second

// ownerHash names an owner in the queue's keys.
func ownerHash(owner string) string {
	sum := sha256.Sum256([]byte(owner))
	return hex.EncodeToString(sum[:12])
}

// shardOf is the shard of an owner's exports.
func shardOf(ownerHash string) int {
	n, _ := strconv.ParseUint(ownerHash[:8], 16, 32)
	return int(n % queueShards)
}

// shard returns a shard's tag and its KEYS[1..3] (see lua/queue.lua).
func (s *RedisStore) shard(n int) (tag string, keys []string) {
	tag = s.prefix + "{q" + strconv.Itoa(n) + "}:"
	return tag, []string{tag + "active", tag + "running", tag + "info"}
}

// runShard runs a queue script on shard n.
func (s *RedisStore) runShard(ctx context.Context, script *redis.Script, n int, ttl time.Duration, extra []string, args ...any) ([]any, error) {
	tag, keys := s.shard(n)
	keys = append(keys, extra...)
	argv := append([]any{tag, max(ttl, queueMinTTL).Milliseconds()}, args...)
	return script.Run(ctx, s.client, keys, argv...).Slice()
}

// push queues id, ready after delay; with forget it also stops tracking
// its attempt. A push ready at once is announced to claimers.
func (s *RedisStore) push(ctx context.Context, owner, kind, id string, delay time.Duration, forget bool, retention time.Duration) error {
	h := ownerHash(owner)
	f, events := "", ""
	if forget {
		f = "forget"
	}
	if delay <= 0 {
		delay, events = 0, s.eventsChannel()
	}
	_, err := s.runShard(ctx, scriptQueuePush, shardOf(h), 2*retention, nil, id, h, kind, delay.Milliseconds(), f, events)
	return err
}

// Enqueue implements Queue.
func (s *RedisStore) Enqueue(ctx context.Context, job *Job, token string, maxAttempts int, retention time.Duration) (*Job, error) {
	fields, err := encodeJob(job, retention)
	if err != nil {
		return nil, err
	}
	args := append([]any{s.eventsChannel(), token, retention.Milliseconds(), maxAttempts}, fields...)
	h := ownerHash(job.Owner)
	n := shardOf(h)
	tag, shardKeys := s.shard(n)
	index := s.ownerKey(job.Owner)
	var old *redis.Cmd
	// The id is queued (ready after the grace) in the same round trip as
	// the job's creation and its owner's index, before them.
	res, err := s.pipelined(ctx, scriptEnqueue, s.keys(job.ID), args, func(pipe redis.Pipeliner) {
		pipe.Eval(ctx, luaQueuePush, shardKeys, tag, max(2*retention, queueMinTTL).Milliseconds(),
			job.ID, h, job.Kind, enqueueGrace.Milliseconds(), "", "")
		old = s.indexJob(ctx, pipe, index, job.ID, retention)
	})
	if err == nil {
		s.prune(ctx, index, old)
	}
	if err != nil {
		return nil, err
	}
	if len(res) != 2 || res[0] != "ok" {
		return nil, fmt.Errorf("enqueue %s: %v", job.ID, res[0])
	}
	ms, err := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: enqueue %s: time %v", ErrCorrupt, job.ID, res[1])
	}
	// Ready now. If this fails, the grace runs out instead: no error.
	_ = s.push(ctx, job.Owner, job.Kind, job.ID, 0, false, retention)
	j := job.clone()
	j.CreatedAt = time.UnixMilli(ms).UTC()
	j.UpdatedAt, j.ExpiresAt = j.CreatedAt, j.CreatedAt.Add(retention.Truncate(time.Millisecond))
	return j, nil
}

// claimFrom is where the next Claim starts probing shards, so that
// claimers spread over them.
var claimFrom atomic.Uint32

// Claim implements Queue. It probes the shards, one script each, from a
// rotating start, and begins the first export a shard hands it.
func (s *RedisStore) Claim(ctx context.Context, kinds []string, maxPerUser int, lease Lease) (*Claim, error) {
	kinds = slices.Clone(kinds)
	slices.Sort(kinds)
	kinds = slices.Compact(kinds)
	if len(kinds) == 0 {
		return nil, nil
	}
	start := int(claimFrom.Add(1))
	for i := range queueShards {
		n := (start + i) % queueShards
		tag, _ := s.shard(n)
		ready := make([]string, len(kinds))
		args := []any{maxPerUser, lease.TTL.Milliseconds(), time.Second.Milliseconds()}
		for k, kind := range kinds {
			ready[k] = tag + "ready:" + kind
			args = append(args, kind)
		}
		// A claim whose job turned out gone is settled and the shard tried
		// again: it may hold more.
		for range 8 {
			res, err := s.runShard(ctx, scriptQueueClaim, n, 0, ready, args...)
			if err != nil {
				return nil, err
			}
			if len(res) != 4 || res[0] != "ok" {
				break // none ready here
			}
			id, _ := res[1].(string)
			c, err := s.begin(ctx, n, id, lease)
			if c != nil || err != nil {
				return c, err
			}
		}
	}
	return nil, nil
}

// begin begins the attempt of id that shard n's claim took, or settles
// the claim if the job cannot be begun. It returns nil, nil when the job
// is not there to begin.
func (s *RedisStore) begin(ctx context.Context, n int, id string, lease Lease) (*Claim, error) {
	settle := func(mode string, ms int64) error {
		_, err := s.runShard(ctx, scriptQueueSettle, n, 0, nil, id, mode, ms)
		return err
	}
	if !validID(id) {
		return nil, settle("forget", 0)
	}
	res, err := scriptBegin.Run(ctx, s.client, s.keys(id), s.eventsChannel(), lease.Token, lease.TTL.Milliseconds()).Slice()
	if err != nil {
		return nil, err
	}
	code, _ := res[0].(string)
	switch code {
	case "ok":
		h := replyHash(res[1:])
		j, err := decodeJob(h)
		if err != nil {
			return nil, err
		}
		c := &Claim{Job: j, Hash: []byte(h[fHash])}
		if len(c.Hash) == 0 {
			c.Hash = nil
		}
		c.Chunks, _ = strconv.ParseInt(h["chunks"], 10, 64)
		handed, _ := strconv.Atoi(h[fHanded])
		most, _ := strconv.Atoi(h[fMaxAtt])
		c.Left = max(most-(j.Attempt-handed), 0)
		return c, nil
	case "held":
		ms, _ := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
		return nil, settle("check", ms+50)
	default: // gone, missing, exhausted
		return nil, settle("forget", 0)
	}
}

// replyHash reads field, value pairs of a script's reply.
func replyHash(res []any) map[string]string {
	h := make(map[string]string, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		k, _ := res[i].(string)
		v, _ := res[i+1].(string)
		h[k] = v
	}
	return h
}

// Release implements Queue.
func (s *RedisStore) Release(ctx context.Context, job *Job, lease Lease, retry *Reason, delay time.Duration) error {
	mode, text, code := "handback", "", ""
	if retry != nil {
		mode, text, code = "retry", retry.Text, retry.Code
	}
	res, err := scriptRelease.Run(ctx, s.client, s.keys(job.ID), s.eventsChannel(), lease.Token, mode, text, code).Slice()
	if err != nil {
		return err
	}
	switch res[0] {
	case "ok":
	case "missing":
		return fmt.Errorf("release %s: %w", job.ID, ErrNotFound)
	default:
		return fmt.Errorf("release %s: %w", job.ID, ErrLeaseLost)
	}
	// Should this fail, the attempt's lease is gone and the recoverer
	// queues the export once its check is due.
	return s.push(ctx, job.Owner, job.Kind, job.ID, delay, true, job.ExpiresAt.Sub(job.UpdatedAt))
}

// Settle implements Queue.
func (s *RedisStore) Settle(ctx context.Context, job *Job) error {
	_, err := s.runShard(ctx, scriptQueueSettle, shardOf(ownerHash(job.Owner)), 0, nil, job.ID, "forget", 0)
	return err
}

// recoverBatch is how many due attempts one Recover takes per shard.
const recoverBatch = 100

// Recover implements Queue: one pipeline takes the due attempts of every
// shard, one pipeline probes their jobs, and each is settled, checked
// later or queued again.
func (s *RedisStore) Recover(ctx context.Context) (int, error) {
	due, err := s.evalMany(ctx, scriptQueueDue, queueShards, func(i int) ([]string, []any) {
		tag, keys := s.shard(i)
		return keys, []any{tag, queueMinTTL.Milliseconds(), recoverBatch, recheck.Milliseconds()}
	})
	if err != nil {
		return 0, err
	}
	type attempt struct {
		shard       int
		id, owner   string
		kind        string
		probe, next []any
	}
	var todo []*attempt
	for n, cmd := range due {
		res, _ := cmd.Slice()
		for i := 0; i+1 < len(res); i += 2 {
			id, _ := res[i].(string)
			info, _ := res[i+1].(string)
			owner, kind, ok := strings.Cut(info, " ")
			if !ok || !validID(id) {
				continue
			}
			todo = append(todo, &attempt{shard: n, id: id, owner: owner, kind: kind})
		}
	}
	if len(todo) == 0 {
		return 0, nil
	}
	probes, err := s.evalMany(ctx, scriptProbe, len(todo), func(i int) ([]string, []any) {
		return s.keys(todo[i].id), []any{s.eventsChannel()}
	})
	if err != nil {
		return 0, err
	}
	queued := 0
	acts, err := s.evalMany(ctx, scriptQueuePush, len(todo), func(i int) ([]string, []any) {
		a := todo[i]
		tag, keys := s.shard(a.shard)
		res, _ := probes[i].Slice()
		code := ""
		if len(res) > 0 {
			code, _ = res[0].(string)
		}
		switch code {
		case "held":
			ms, _ := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
			return keys, []any{scriptQueueSettle, tag, queueMinTTL.Milliseconds(), a.id, "check", ms + 50}
		case "lapsed":
			queued++
			return keys, []any{scriptQueuePush, tag, queueMinTTL.Milliseconds(), a.id, a.owner, a.kind, 0, "forget", s.eventsChannel()}
		case "gone", "missing":
			return keys, []any{scriptQueueSettle, tag, queueMinTTL.Milliseconds(), a.id, "forget", 0}
		}
		return nil, nil // the probe failed: the next check comes after recheck
	})
	for _, cmd := range acts {
		if cmd != nil && cmd.Err() != nil && err == nil {
			err = cmd.Err()
		}
	}
	return queued, err
}

// evalMany runs n calls of scripts in one pipeline (one round trip per
// Cluster node) and returns their commands, in order. call returns the
// keys and ARGV of call i; an ARGV that starts with a *redis.Script runs
// that script instead of script; nil keys skip the call (its command is
// nil). Calls refused with NOSCRIPT (a new or restarted server) are sent
// again once the scripts are loaded; the others are never repeated.
func (s *RedisStore) evalMany(ctx context.Context, script *redis.Script, n int, call func(i int) ([]string, []any)) ([]*redis.Cmd, error) {
	type sent struct {
		script *redis.Script
		keys   []string
		argv   []any
	}
	calls := make([]sent, n)
	for i := range calls {
		keys, argv := call(i)
		c := sent{script: script, keys: keys, argv: argv}
		if len(argv) > 0 {
			if sc, ok := argv[0].(*redis.Script); ok {
				c.script, c.argv = sc, argv[1:]
			}
		}
		calls[i] = c
	}
	cmds := make([]*redis.Cmd, n)
	todo := make([]int, 0, n)
	for i, c := range calls {
		if c.keys != nil {
			todo = append(todo, i)
		}
	}
	for attempt := 0; len(todo) > 0; attempt++ {
		pipe := s.client.Pipeline()
		for _, i := range todo {
			c := calls[i]
			cmds[i] = pipe.EvalSha(ctx, c.script.Hash(), c.keys, c.argv...)
		}
		_, err := pipe.Exec(ctx)
		var missing []int
		loads := map[*redis.Script]bool{}
		for _, i := range todo {
			if redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
				missing = append(missing, i)
				loads[calls[i].script] = true
			}
		}
		if len(missing) == 0 || attempt > 0 {
			var reply redis.Error
			if err != nil && !errors.As(err, &reply) {
				return cmds, err // the connection, not a script's reply
			}
			return cmds, nil
		}
		for sc := range loads {
			if err := sc.Load(ctx, s.client).Err(); err != nil {
				return cmds, err
			}
		}
		todo = missing
	}
	return cmds, nil
}
