package exporter

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Every owner's jobs are also listed, for operators (ListOptions.AllOwners),
// in allShards sorted sets <prefix>{all<n>}:jobs, scored like an owner's
// index (creation time, ms) and picked by the job id's hash (see
// allKeyFor). One set for
// all jobs would be a hot key, and on a Cluster a hot slot: every creation
// of every instance would write it. Sharded by id, creations spread evenly
// over allShards slots (so over the Cluster's nodes), each shard takes
// 1/allShards of the writes, and no owner, however busy, makes one shard
// hotter than another. The price is paid by the rare reader: a page reads
// the next entries of every shard, in one pipeline (one round trip per
// node, in parallel), and merges them newest first.
//
// A shard is written, kept and pruned exactly as an owner's index is (see
// redis_list.go): in the round trip that creates the job, its TTL only
// ever extended, its entries removed only once their job is gone.

// allShards is how many sorted sets the cross-owner index is spread over.
const allShards = 16

// allKeyFor is the shard of the cross-owner index that lists id, whose
// creation also writes the owner's index near. It is picked by the id's
// hash; on a Cluster, among the shards that near's master serves, so that
// the creation's round trip reaches no third node (the job's and the
// owner index's): creations still spread over those shards, and owners
// (whose indexes spread over the nodes) over all of them. Any shard would
// do: a listing reads them all.
func (s *RedisStore) allKeyFor(ctx context.Context, id, near string) string {
	h := fnv.New32a()
	h.Write([]byte(id))
	sum := h.Sum32()
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		if shards := s.placement.near(ctx, cc, s, near); len(shards) > 0 {
			return s.allShardKey(shards[sum%uint32(len(shards))])
		}
	}
	return s.allShardKey(int(sum % allShards))
}

// allPlacement remembers which master serves which shards of the
// cross-owner index, for allKeyFor. It is read again after
// allPlacementTTL: a stale one only costs a creation a third node.
type allPlacement struct {
	mu       sync.Mutex
	at       time.Time
	byMaster map[string][]int // master's address -> the shards it serves
}

const allPlacementTTL = 10 * time.Second

// near returns the shards served by the master of key, or nil if the
// Cluster's state cannot say.
func (p *allPlacement) near(ctx context.Context, cc *redis.ClusterClient, s *RedisStore, key string) []int {
	m, err := cc.MasterForKey(ctx, key)
	if err != nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byMaster == nil || time.Since(p.at) > allPlacementTTL {
		byMaster := make(map[string][]int)
		for n := range allShards {
			c, err := cc.MasterForKey(ctx, s.allShardKey(n))
			if err != nil {
				return nil
			}
			byMaster[c.Options().Addr] = append(byMaster[c.Options().Addr], n)
		}
		p.byMaster, p.at = byMaster, time.Now()
	}
	return p.byMaster[m.Options().Addr]
}

func (s *RedisStore) allShardKey(n int) string {
	return s.prefix + "{all" + strconv.Itoa(n) + "}:jobs"
}

// ListAll implements AllLister: a page of every owner's jobs, newest
// first. The cursor is "<score>:<id>" of the last job of the previous
// page, as List's; jobs created in the same millisecond are ordered by id.
func (s *RedisStore) ListAll(ctx context.Context, cursor string, limit int) ([]*Job, string, error) {
	after := allEntry{score: 1<<63 - 1}
	if cursor != "" {
		score, id, ok := strings.Cut(cursor, ":")
		n, err := strconv.ParseInt(score, 10, 64)
		if !ok || err != nil || !validID(id) {
			return nil, "", fmt.Errorf("%w: list cursor %s", ErrInvalid, quoteCapped(cursor))
		}
		after = allEntry{score: n, id: id}
	}
	m := &allMerge{s: s, after: after, batch: int64(limit + 1)}
	for n := range allShards {
		m.shards = append(m.shards, &allShard{key: s.allShardKey(n)})
	}
	var (
		jobs    []*Job
		cursors []string
		gone    = map[string][]any{}
	)
	for len(jobs) <= limit {
		entries, err := m.next(ctx, limit+1-len(jobs))
		if err != nil {
			return nil, "", err
		}
		if len(entries) == 0 {
			break
		}
		pipe := s.client.Pipeline()
		hashes := make([]*redis.MapStringStringCmd, len(entries))
		held := make([]*redis.IntCmd, len(entries))
		for i, en := range entries {
			k := s.keys(en.id)
			hashes[i], held[i] = pipe.HGetAll(ctx, k[0]), pipe.Exists(ctx, k[2])
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, "", err
		}
		for i, h := range hashes {
			en := entries[i]
			j, err := decodeJob(h.Val())
			if err != nil || j.ID != en.id {
				gone[en.key] = append(gone[en.key], en.id)
				continue
			}
			if lapsed(j, held[i].Val()) {
				if j, err = s.Get(ctx, en.id, j.Owner); err != nil {
					continue
				}
			}
			jobs, cursors = append(jobs, j), append(cursors, en.cursor())
		}
	}
	// Forgotten only once the page is read, as List does.
	for key, ids := range gone {
		s.client.ZRem(ctx, key, ids...) // best effort: List skips them anyway
	}
	if len(jobs) > limit {
		return jobs[:limit], cursors[limit-1], nil
	}
	return jobs, "", nil
}

// allEntry is an entry of a shard of the cross-owner index.
type allEntry struct {
	score int64
	id    string
	key   string // the shard it was read from
}

func (e allEntry) cursor() string { return strconv.FormatInt(e.score, 10) + ":" + e.id }

// before reports whether e comes before o in a listing: newer, or as new
// with a greater id (the order of ZREVRANGEBYSCORE).
func (e allEntry) before(o allEntry) bool {
	return e.score > o.score || (e.score == o.score && e.id > o.id)
}

// allShard is one shard's entries read ahead of the merge.
type allShard struct {
	key    string
	offset int64 // entries read so far from the shard's first at or before the cursor
	buf    []allEntry
	done   bool // the shard has no more
}

// allMerge merges the shards' entries that follow a cursor, newest first.
type allMerge struct {
	s      *RedisStore
	after  allEntry // the cursor: entries at or before it in the listing were listed
	batch  int64
	shards []*allShard
}

// next returns up to want of the entries that follow those it returned
// before. It reads ahead, in one pipeline, from every shard whose
// buffered entries ran out, so that the merge never returns an entry
// while a shard could still hold a newer one.
func (m *allMerge) next(ctx context.Context, want int) ([]allEntry, error) {
	var out []allEntry
	for len(out) < want {
		if err := m.fill(ctx); err != nil {
			return nil, err
		}
		var best *allShard
		for _, sh := range m.shards {
			if len(sh.buf) > 0 && (best == nil || sh.buf[0].before(best.buf[0])) {
				best = sh
			}
		}
		if best == nil {
			break // every shard is done
		}
		out = append(out, best.buf[0])
		best.buf = best.buf[1:]
	}
	return out, nil
}

// fill reads the next entries of the shards whose buffer is empty.
func (m *allMerge) fill(ctx context.Context) error {
	var todo []*allShard
	for _, sh := range m.shards {
		if len(sh.buf) == 0 && !sh.done {
			todo = append(todo, sh)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	max := "+inf"
	if m.after.id != "" {
		max = strconv.FormatInt(m.after.score, 10)
	}
	pipe := m.s.client.Pipeline()
	cmds := make([]*redis.ZSliceCmd, len(todo))
	for i, sh := range todo {
		cmds[i] = pipe.ZRevRangeByScoreWithScores(ctx, sh.key, &redis.ZRangeBy{Min: "-inf", Max: max, Offset: sh.offset, Count: m.batch})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	for i, sh := range todo {
		zs := cmds[i].Val()
		sh.offset += int64(len(zs))
		sh.done = int64(len(zs)) < m.batch
		for _, z := range zs {
			id, _ := z.Member.(string)
			en := allEntry{score: int64(z.Score), id: id, key: sh.key}
			// Skip what the previous page listed: as new as the cursor,
			// and not after it.
			if m.after.id != "" && !m.after.before(en) {
				continue
			}
			if validID(id) {
				sh.buf = append(sh.buf, en)
			}
		}
		if len(sh.buf) == 0 && !sh.done {
			return m.fill(ctx) // all skipped: read further
		}
	}
	return nil
}
