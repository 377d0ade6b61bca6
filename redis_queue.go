package exporter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
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
// lease lapses is queued again), and an enqueue queues the id before it
// records the job (an id whose job never came is dropped by its claim,
// enqueueGrace after it was queued).

// queueShards is how many shards the queue has: enough to spread the
// queues of a busy service over the masters of a Cluster, few enough that
// an idle claimer's probe of every shard costs little.
const queueShards = 16

// enqueueGrace is how long after it was queued a claim that finds no job
// for an id queues it again rather than drop it: the job's creation, sent
// with the push, may reach its Cluster node after it.
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

// push queues id of owner (by its hash), ready after delay. With the
// lease token of its attempt (forget) it first stops tracking that
// attempt, and changes nothing if another is tracked (see lua/queue.lua).
// The push is announced to claimers, even one ready later: a claimer
// told of it learns when it is ready (see Claim) and looks again then.
func (s *RedisStore) push(ctx context.Context, h, kind, id string, delay time.Duration, forget string, retention time.Duration) error {
	delay = max(delay, 0)
	n := shardOf(h)
	_, err := s.runShard(ctx, scriptQueuePush, n, 2*retention, nil, id, h, kind, delay.Milliseconds(), forget, s.eventsChannel(), n)
	if err == nil {
		s.idle.readyAt(n, time.Now().Add(delay))
	}
	return err
}

// Enqueue implements Queue.
//
// An export must never be recorded without being queued: nothing would
// run it. On one server the queue push rides the creation's round trip,
// after it (a server runs one connection's commands in order, and a
// client that dies sends the whole pipeline or none of it). On a Cluster
// the two go to different nodes, so the push goes first, unannounced, and
// the creation follows with the announcement: a client that dies in
// between leaves a queued id whose job never came, which its claim drops.
func (s *RedisStore) Enqueue(ctx context.Context, job *Job, token string, maxAttempts int, retention time.Duration) (*Job, error) {
	fields, err := encodeJob(job, retention)
	if err != nil {
		return nil, err
	}
	args := append([]any{s.eventsChannel(), token, retention.Milliseconds(), maxAttempts}, fields...)
	h := ownerHash(job.Owner)
	n := shardOf(h)
	tag, shardKeys := s.shard(n)
	_, cluster := s.client.(*redis.ClusterClient)
	if cluster {
		if _, err := s.runShard(ctx, scriptQueuePush, n, 2*retention, nil, job.ID, h, job.Kind, 0, "", "", n); err != nil {
			return nil, err
		}
	}
	var ix indexWrite
	var push redis.Cmder
	res, err := s.pipelined(ctx, scriptEnqueue, s.keys(job.ID), args, func(pipe redis.Pipeliner) {
		ix = s.indexJobs(ctx, pipe, job, retention)
	}, func(pipe redis.Pipeliner) {
		if cluster {
			push = pipe.Publish(ctx, s.eventsChannel(), job.ID+" pending "+job.Kind+" "+strconv.Itoa(n))
			return
		}
		push = pipe.Eval(ctx, luaQueuePush, shardKeys, tag, max(2*retention, queueMinTTL).Milliseconds(),
			job.ID, h, job.Kind, 0, "", s.eventsChannel(), n)
	})
	if err != nil {
		return nil, err
	}
	ix.prune(ctx, s)
	j, err := created("enqueue", job, res, retention)
	if err != nil {
		return nil, err
	}
	switch {
	case push.Err() == nil || cluster:
		// Queued (an announcement lost on a Cluster only delays its claim
		// to the claimers' next poll).
		s.idle.ready(n)
	default:
		// The job is recorded but not queued: queue it now.
		if err := s.push(ctx, h, job.Kind, job.ID, 0, "", retention); err != nil {
			return nil, err
		}
	}
	return j, nil
}

// claimFrom is where the next Claim starts probing shards, so that
// claimers spread over them.
var claimFrom atomic.Uint32

// idleShards remembers, per set of kinds, until when each shard was found
// with nothing ready, so that a Claim does not probe shards that are empty
// (a busy service's exports are in a few shards). A shard is probed again
// when an export is queued there (this store's push, or an event of
// another instance's: see redisSubscription), or after a second.
type idleShards struct {
	mu    sync.Mutex
	kinds map[string]*[queueShards]atomic.Int64
}

func (m *idleShards) of(kinds []string) *[queueShards]atomic.Int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := strings.Join(kinds, " ")
	if m.kinds == nil {
		m.kinds = map[string]*[queueShards]atomic.Int64{}
	}
	if m.kinds[key] == nil {
		m.kinds[key] = new([queueShards]atomic.Int64)
	}
	return m.kinds[key]
}

// ready forgets that shard n was empty.
func (m *idleShards) ready(n int) { m.readyAt(n, time.Time{}) }

// readyAt notes that an export in shard n is ready at t (a delayed push
// of this store): the shard is probed again then, if it was to be
// skipped for longer.
func (m *idleShards) readyAt(n int, t time.Time) {
	if n < 0 || n >= queueShards {
		return
	}
	ms := int64(0)
	if !t.IsZero() {
		ms = t.UnixMilli()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, idle := range m.kinds {
		for {
			v := idle[n].Load()
			if v <= ms || idle[n].CompareAndSwap(v, ms) {
				break
			}
		}
	}
}

// nextReady implements readyTimer: the earliest time a shard that a
// Claim of kinds skips may be probed again, or the zero time if one is
// probed at once.
func (s *RedisStore) nextReady(kinds []string) time.Time {
	kinds = slices.Clone(kinds)
	slices.Sort(kinds)
	kinds = slices.Compact(kinds)
	idle := s.idle.of(kinds)
	next := int64(math.MaxInt64)
	for n := range idle {
		next = min(next, idle[n].Load())
	}
	if next <= time.Now().UnixMilli() {
		return time.Time{}
	}
	return time.UnixMilli(next)
}

// Claim implements Queue. It probes the shards, one script each, from a
// rotating start (skipping those found empty lately), until it has taken
// as many exports as it has leases, and begins them in one pipeline.
func (s *RedisStore) Claim(ctx context.Context, kinds []string, maxPerUser int, leases []Lease) ([]*Claim, error) {
	kinds = slices.Clone(kinds)
	slices.Sort(kinds)
	kinds = slices.Compact(kinds)
	if len(kinds) == 0 || len(leases) == 0 {
		return nil, nil
	}
	start := int(claimFrom.Add(1))
	idle := s.idle.of(kinds)
	now := time.Now().UnixMilli()
	var claims []*Claim
	for i := 0; i < queueShards && len(claims) < len(leases); i++ {
		n := (start + i) % queueShards
		if idle[n].Load() > now {
			continue // found empty lately, and no export was queued there since
		}
		tag, _ := s.shard(n)
		ready := make([]string, len(kinds))
		// A claim whose job turned out gone is settled and the shard tried
		// again: it may hold more.
		for range 4 {
			want := len(leases) - len(claims)
			tokens := make([]string, want)
			for k, l := range leases[len(claims):] {
				tokens[k] = l.Token
			}
			args := []any{maxPerUser, leases[0].TTL.Milliseconds(), time.Second.Milliseconds(), want, strings.Join(tokens, " ")}
			for k, kind := range kinds {
				ready[k] = tag + "ready:" + kind
				args = append(args, kind)
			}
			res, err := s.runShard(ctx, scriptQueueClaim, n, 0, ready, args...)
			if err != nil {
				return claims, err
			}
			if len(res) == 2 && res[0] == "none" {
				// Nothing ready here: skip the shard until its next export is
				// ready, for a second at most, or one is queued there.
				wait := time.Second
				if ms, err := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64); err == nil {
					wait = min(time.Duration(ms)*time.Millisecond, wait)
				}
				idle[n].Store(time.Now().Add(wait).UnixMilli())
				break
			}
			var took []taken
			for k := 1; k+3 < len(res); k += 4 {
				var c taken
				c.id, _ = res[k].(string)
				c.owner, _ = res[k+1].(string)
				c.kind, _ = res[k+2].(string)
				ms, _ := strconv.ParseInt(fmt.Sprint(res[k+3]), 10, 64)
				c.age = time.Duration(ms) * time.Millisecond
				took = append(took, c)
			}
			got, err := s.begin(ctx, n, took, leases[len(claims):])
			claims = append(claims, got...)
			if err != nil || len(got) == len(took) || len(claims) == len(leases) {
				if err != nil {
					return claims, err
				}
				break
			}
		}
	}
	return claims, nil
}

// begin begins the attempts of ids that shard n's claim took, under
// leases, in one pipeline, and settles the claims whose job cannot be
// begun (gone, ended, held by another attempt). It returns the claims
// begun, each with its lease.
func (s *RedisStore) begin(ctx context.Context, n int, ids []taken, leases []Lease) ([]*Claim, error) {
	tag, keys := s.shard(n)
	var claims []*Claim
	res, err := s.evalMany(ctx, scriptBegin, len(ids), func(i int) ([]string, []any) {
		if !validID(ids[i].id) {
			return keys, []any{scriptQueueSettle, tag, queueMinTTL.Milliseconds(), ids[i].id, "forget", 0, leases[i].Token}
		}
		return s.keys(ids[i].id), []any{s.eventsChannel(), leases[i].Token, leases[i].TTL.Milliseconds()}
	})
	if err != nil {
		return nil, err
	}
	var settles [][]any
	for i, cmd := range res {
		var r []any
		if cmd != nil {
			r, _ = cmd.Slice()
		}
		code := ""
		if len(r) > 0 {
			code, _ = r[0].(string)
		}
		switch code {
		case "ok":
			h := replyHash(r[1:])
			j, err := decodeJob(h)
			if err != nil {
				return claims, err
			}
			c := &Claim{Job: j, Hash: []byte(h[fHash])}
			if len(c.Hash) == 0 {
				c.Hash = nil
			}
			c.Chunks, _ = strconv.ParseInt(h["chunks"], 10, 64)
			handed, _ := strconv.Atoi(h[fHanded])
			most, _ := strconv.Atoi(h[fMaxAtt])
			c.Left = max(most-(j.Attempt-handed), 0)
			c.Lease = leases[i]
			claims = append(claims, c)
		case "held":
			ms, _ := strconv.ParseInt(fmt.Sprint(r[1]), 10, 64)
			settles = append(settles, []any{scriptQueueSettle, tag, queueMinTTL.Milliseconds(), ids[i].id, "check", ms + 50, leases[i].Token})
		case "missing":
			if ids[i].age < enqueueGrace {
				// Its creation may not have reached its node yet (a Cluster):
				// queue it again, a little later.
				retry := missingRetry(ids[i].age)
				settles = append(settles, []any{scriptQueuePush, tag, queueMinTTL.Milliseconds(), ids[i].id, ids[i].owner,
					ids[i].kind, retry.Milliseconds(), leases[i].Token, "", n, ids[i].age.Milliseconds()})
				s.idle.readyAt(n, time.Now().Add(retry))
				break
			}
			settles = append(settles, []any{scriptQueueSettle, tag, queueMinTTL.Milliseconds(), ids[i].id, "forget", 0, leases[i].Token})
		case "":
			// The begin failed (the connection): its lease lapses and the
			// recoverer queues the export again.
		default: // gone, exhausted
			settles = append(settles, []any{scriptQueueSettle, tag, queueMinTTL.Milliseconds(), ids[i].id, "forget", 0, leases[i].Token})
		}
	}
	if len(settles) > 0 {
		_, err = s.evalMany(ctx, scriptQueueSettle, len(settles), func(i int) ([]string, []any) { return keys, settles[i] })
	}
	return claims, err
}

// taken is an export a claim script took from its queue.
type taken struct {
	id, owner, kind string
	age             time.Duration // since it was ready (first queued, if its job was found missing before)
}

// missingRetry is how much later a young export whose job a claim did not
// find is queued again, age after it was queued: soon at first (its
// creation is most likely one round trip behind its push), then less
// often, up to once a second until enqueueGrace.
func missingRetry(age time.Duration) time.Duration {
	return min(max(age, 20*time.Millisecond), time.Second)
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
	// queues the export once its check is due. Should the recoverer have
	// done so already (it found the lease gone in between), the push
	// changes nothing.
	return s.push(ctx, ownerHash(job.Owner), job.Kind, job.ID, delay, lease.Token, job.ExpiresAt.Sub(job.UpdatedAt))
}

// Settle implements Queue.
func (s *RedisStore) Settle(ctx context.Context, job *Job) error {
	n := shardOf(ownerHash(job.Owner))
	// The export ended: whichever attempt is tracked is over.
	_, err := s.runShard(ctx, scriptQueueSettle, n, 0, nil, job.ID, "forget", 0, "*")
	if err == nil {
		s.idle.ready(n) // its owner may have a turn again (MaxPerUser)
	}
	return err
}
