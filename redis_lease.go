package exporter

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// renewBatch is how many jobs one pipeline of Renew renews: a pass over
// many jobs costs a round trip per renewBatch (per Cluster node, in
// parallel), not per job.
const renewBatch = 1000

// Renew implements Store. Every renewBatch jobs are one pipeline of
// scriptRenew calls, which go-redis splits by Cluster node and sends to
// the nodes at once; the indexes (the owners', and the cross-owner
// index's shards) are kept in the first pipeline that holds one of their
// jobs.
func (s *RedisStore) Renew(ctx context.Context, retention time.Duration, held []Held) []error {
	errs := make([]error, len(held))
	owners := make(map[string]bool) // owners whose index is kept already
	for start := 0; start < len(held); start += renewBatch {
		end := min(start+renewBatch, len(held))
		var indexes []string
		if start == 0 && len(held) > 0 {
			// The cross-owner index's shards: a job's may be any of them.
			for n := range allShards {
				indexes = append(indexes, s.allShardKey(n))
			}
		}
		for _, h := range held[start:end] {
			if !owners[h.Owner] { // hashing the owner's name once, not per job
				owners[h.Owner] = true
				indexes = append(indexes, s.ownerKey(h.Owner))
			}
		}
		s.renew(ctx, retention, held[start:end], indexes, errs[start:end])
	}
	return errs
}

// renew renews held in one pipeline, with scriptKeepIndex on indexes, and
// sets errs. Jobs whose script the server lacked (NOSCRIPT) are renewed
// again once it is loaded.
func (s *RedisStore) renew(ctx context.Context, retention time.Duration, held []Held, indexes []string, errs []error) {
	todo := make([]int, len(held))
	for i := range todo {
		todo[i] = i
	}
	for attempt := 0; attempt < 2 && len(todo) > 0; attempt++ {
		pipe := s.client.Pipeline()
		cmds := make([]*redis.Cmd, len(todo))
		for n, i := range todo {
			h := held[i]
			cmds[n] = pipe.EvalSha(ctx, scriptRenew.Hash(), s.keys(h.ID)[:3], "", h.Lease.Token, h.Lease.TTL.Milliseconds())
		}
		if attempt == 0 {
			for _, index := range indexes {
				pipe.Eval(ctx, luaKeepIndex, []string{index}, indexTTL(retention).Milliseconds())
			}
		}
		_, _ = pipe.Exec(ctx) // each command carries its own error
		var again []int
		for n, i := range todo {
			errs[i] = renewResult(held[i].ID, cmds[n])
			if redis.HasErrorPrefix(cmds[n].Err(), "NOSCRIPT") {
				again = append(again, i)
			}
		}
		if len(again) > 0 {
			if err := scriptRenew.Load(ctx, s.client).Err(); err != nil {
				return
			}
		}
		todo = again
	}
}

// renewResult turns the reply of one scriptRenew into its error.
func renewResult(id string, cmd *redis.Cmd) error {
	res, err := cmd.Slice()
	switch {
	case err != nil:
		return err
	case len(res) == 0:
		return fmt.Errorf("%w: renew %s: empty script reply", ErrCorrupt, id)
	}
	switch code, _ := res[0].(string); code {
	case "ok":
		return nil
	case "fenced":
		return ErrLeaseLost
	case "missing":
		return ErrNotFound
	default:
		return fmt.Errorf("%w: renew %s: reply %q", ErrCorrupt, id, code)
	}
}
