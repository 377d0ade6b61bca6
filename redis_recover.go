package exporter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Recovery of the durable queue (Queue.Recover): the attempts whose lease
// lapsed are found by the time their check is due (lua/queue_due.lua),
// probed on their job (lua/probe.lua) and queued again, or settled.

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
		shard           int
		id, owner, kind string
		token           string // of the tracked attempt
	}
	var todo []*attempt
	for n, cmd := range due {
		res, _ := cmd.Slice()
		for i := 0; i+1 < len(res); i += 2 {
			id, _ := res[i].(string)
			info, _ := res[i+1].(string)
			f := strings.Fields(info)
			if len(f) != 3 || !validID(id) {
				continue
			}
			todo = append(todo, &attempt{shard: n, id: id, owner: f[0], kind: f[1], token: f[2]})
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
			return keys, []any{scriptQueueSettle, tag, queueMinTTL.Milliseconds(), a.id, "check", ms + 50, a.token}
		case "lapsed":
			queued++
			return keys, []any{scriptQueuePush, tag, queueMinTTL.Milliseconds(), a.id, a.owner, a.kind, 0, a.token, s.eventsChannel(), a.shard}
		case "gone", "missing":
			return keys, []any{scriptQueueSettle, tag, queueMinTTL.Milliseconds(), a.id, "forget", 0, a.token}
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
