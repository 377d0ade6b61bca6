package exporter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Each owner's jobs are listed in <prefix>owner:{<hash of owner>}:jobs, a
// sorted set of job ids scored by creation time (ms, by the clock of the
// server that holds the index). It lives in another Cluster slot than the
// jobs, so it is written in the round trip that creates a job but not by
// its script, and it may hold ids whose job is gone (expired, or never
// created): List skips them and removes them, and Create removes those it
// finds gone among the oldest entries.
//
// No instance's settings can hide another's jobs: an entry is removed only
// once its job is gone, and the index's TTL is only ever extended, never
// shortened: to twice the creator's Retention at each creation, and again
// at each lease renewal (see Renew), so that an export that runs longer
// than its Retention stays listed.

// ownerKey is the sorted set of an owner's job ids. The owner's name is
// hashed: it may hold any byte, braces included, and must not pick the
// Cluster slot.
func (s *RedisStore) ownerKey(owner string) string {
	sum := sha256.Sum256([]byte(owner))
	return s.prefix + "owner:{" + hex.EncodeToString(sum[:12]) + "}:jobs"
}

// indexTTL is how long an owner's index is kept at least after a creation
// or a renewal: jobs live Retention after their last update, and the
// index must outlive them.
func indexTTL(retention time.Duration) time.Duration { return 2 * retention }

// Create checks up to pruneBatch of an index's entries older than
// pruneAge(retention) for jobs that are gone.
const pruneBatch = 16

// pruneAge is the age past which an index entry may belong to a job that
// is gone: a job lives Retention after its last update. An entry is only
// removed once its job is found gone, so a short age costs checks, never
// entries.
func pruneAge(retention time.Duration) time.Duration { return max(indexTTL(retention), time.Minute) }

// indexJob queues luaIndex on pipe. It is sent whole (EVAL, not
// EVALSHA): a pipeline cannot load a script it misses and go on.
func (s *RedisStore) indexJob(ctx context.Context, pipe redis.Pipeliner, index, id string, retention time.Duration) *redis.Cmd {
	return pipe.Eval(ctx, luaIndex, []string{index}, id, indexTTL(retention).Milliseconds(),
		pruneAge(retention).Milliseconds(), pruneBatch)
}

// indexWrite is what indexJobs queued: the owner's index and the
// cross-owner index's shard, with the old entries each reports.
type indexWrite struct {
	owner, all       string
	ownerOld, allOld *redis.Cmd
}

// indexJobs queues on pipe the entries of job in its owner's index and in
// the cross-owner index (redis_list_all.go).
func (s *RedisStore) indexJobs(ctx context.Context, pipe redis.Pipeliner, job *Job, retention time.Duration) indexWrite {
	w := indexWrite{owner: s.ownerKey(job.Owner)}
	w.all = s.allKeyFor(ctx, job.ID, w.owner)
	w.ownerOld = s.indexJob(ctx, pipe, w.owner, job.ID, retention)
	w.allOld = s.indexJob(ctx, pipe, w.all, job.ID, retention)
	return w
}

// prune prunes both indexes of an indexWrite that was sent.
func (w indexWrite) prune(ctx context.Context, s *RedisStore) {
	s.prune(ctx, w.owner, w.ownerOld)
	s.prune(ctx, w.all, w.allOld)
}

// prune removes from index the ids of old (luaIndex's reply) whose job
// is gone. It is best effort: an entry it leaves is skipped by List.
func (s *RedisStore) prune(ctx context.Context, index string, old *redis.Cmd) {
	ids, err := old.StringSlice()
	if err != nil || len(ids) == 0 {
		return
	}
	pipe := s.client.Pipeline()
	exists := make([]*redis.IntCmd, len(ids))
	for i, id := range ids {
		if validID(id) { // anything else is not an entry of ours
			exists[i] = pipe.Exists(ctx, s.keys(id)[0])
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return
	}
	var gone []any
	for i, c := range exists {
		if c == nil || c.Val() == 0 {
			gone = append(gone, ids[i])
		}
	}
	if len(gone) > 0 {
		s.client.ZRem(ctx, index, gone...)
	}
}

// List implements Store. A cursor is "<score>:<id>" of the last job of the
// previous page; ties in score are ordered by id, as the sorted set does.
func (s *RedisStore) List(ctx context.Context, owner, cursor string, limit int) ([]*Job, string, error) {
	index := s.ownerKey(owner)
	max, after := "+inf", ""
	if cursor != "" {
		score, id, ok := strings.Cut(cursor, ":")
		if _, err := strconv.ParseInt(score, 10, 64); !ok || err != nil || !validID(id) {
			return nil, "", fmt.Errorf("%w: list cursor %s", ErrInvalid, quoteCapped(cursor))
		}
		max, after = score, cursor
	}
	var (
		jobs    []*Job
		offset  int64
		cursors []string
		gone    []any
	)
	for len(jobs) <= limit {
		batch := int64(limit + 1 - len(jobs) + 8)
		entries, err := s.client.ZRevRangeByScoreWithScores(ctx, index, &redis.ZRangeBy{
			Min: "-inf", Max: max, Offset: offset, Count: batch}).Result()
		if err != nil {
			return nil, "", err
		}
		offset += int64(len(entries))
		var ids, marks []string
		for _, z := range entries {
			id, _ := z.Member.(string)
			mark := strconv.FormatInt(int64(z.Score), 10) + ":" + id
			// Skip what the previous page listed: same score, id not below.
			if after != "" && int64(z.Score) == mustScore(after) && id >= after[strings.IndexByte(after, ':')+1:] {
				continue
			}
			if validID(id) {
				ids, marks = append(ids, id), append(marks, mark)
			}
		}
		pipe := s.client.Pipeline()
		hashes := make([]*redis.MapStringStringCmd, len(ids))
		held := make([]*redis.IntCmd, len(ids))
		for i, id := range ids {
			k := s.keys(id)
			hashes[i], held[i] = pipe.HGetAll(ctx, k[0]), pipe.Exists(ctx, k[2])
		}
		if len(ids) > 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				return nil, "", err
			}
		}
		for i, h := range hashes {
			j, err := decodeJob(h.Val())
			if err != nil || j.Owner != owner {
				gone = append(gone, ids[i])
				continue
			}
			if lapsed(j, held[i].Val()) {
				if j, err = s.Get(ctx, ids[i], owner); err != nil {
					continue
				}
			}
			jobs, cursors = append(jobs, j), append(cursors, marks[i])
		}
		if int64(len(entries)) < batch {
			break // the index has no more
		}
	}
	// Forgotten only now: removing entries while paging by offset would
	// skip as many of the entries after them.
	if len(gone) > 0 {
		s.client.ZRem(ctx, index, gone...) // forgetting is best effort
	}
	if len(jobs) > limit {
		return jobs[:limit], cursors[limit-1], nil
	}
	return jobs, "", nil
}

// mustScore is the score part of a cursor List has validated.
func mustScore(cursor string) int64 {
	n, _ := strconv.ParseInt(cursor[:strings.IndexByte(cursor, ':')], 10, 64)
	return n
}
