package exporter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The write path. A Store.Write is scriptWrite (lua/write.lua) preceded
// by an RPUSHX of the write's chunks, both in one MULTI/EXEC: the bytes
// never pass through Lua (which copies every argument twice and held
// throughput to about a third of a plain RPUSH), and the transaction makes
// the pair one unit.
// go-redis gives up on a connection whose reply is late and repeats the
// command on another; what the abandoned connection had sent may still
// reach Redis later, whole or in part. A part of a transaction (no EXEC)
// is discarded by Redis; a whole late copy runs its own script, which
// recognises chunks that are already stored. Without the transaction an
// RPUSHX could be applied alone, and its chunks taken for the next write's.

// maxWriteAttempts bounds the attempts of one write within Write: a
// NOSCRIPT reply (a new or restarted server) costs one, and the
// transaction after it one more, because the RPUSHX of the first was
// applied without its script and has to be removed ({"retry"}).
const maxWriteAttempts = 4

// writeArgs are the ARGV of lua/write.lua, by name (see its header).
type writeArgs struct {
	token  string
	ttl    time.Duration
	begin  bool
	index  int64  // of the first chunk
	chunks int    // appended by the RPUSHX before the script
	bytes  int64  // the job's Bytes once they are stored
	final  Status // "", StatusCompleted or StatusFailed
	text   string // checksum or error text
	code   string // with final StatusFailed: the error code
	hash   []byte // the SHA-256 state after the chunks (durable exports)
	count  int64  // chunks a completed job holds
	read   int64  // bytes read from the source so far (Job.Read), or 0
	seal   bool   // record text and count as what completes the job
}

// argv returns the script's ARGV, after the events channel.
func (a writeArgs) argv(events string) []any {
	begin, seal := "0", "0"
	if a.begin {
		begin = "1"
	}
	if a.seal {
		seal = "seal"
	}
	return []any{events, a.token, a.ttl.Milliseconds(), begin, a.index, a.chunks, a.bytes, string(a.final), a.text, a.count, seal, a.code, a.hash, a.read}
}

// Write implements Store.
func (s *RedisStore) Write(ctx context.Context, id string, lease Lease, w ChunkWrite) error {
	a := writeArgs{token: lease.Token, ttl: lease.TTL, begin: w.Begin, index: w.Index, chunks: len(w.Chunks),
		bytes: w.Bytes, final: w.Final, text: w.Checksum, count: w.Count, hash: w.Hash, read: w.Read}
	if w.Final == StatusFailed {
		a.text, a.code = w.Reason, w.Code
	}
	keys := s.keys(id)
	if w.Final == StatusCompleted && w.Replicas > 0 {
		return s.writeReplicated(ctx, id, keys, a, w)
	}
	res, err := s.transact(ctx, keys, a.argv(s.eventsChannel()), w.Chunks, s.client)
	if err != nil {
		return err
	}
	return writeResult(id, w, res)
}

// transact runs scriptWrite on c, after the RPUSHX of chunks in one
// transaction when there are chunks (when there are none, the script runs
// alone: Redis refuses every command queued in a transaction above
// maxmemory, and an ending must be recorded there). It tries up to
// maxWriteAttempts times: again after a NOSCRIPT reply (once the script is
// loaded) and after a {"retry"} reply. A command refused when it was
// queued (out of memory, say) is reported by its own error rather than
// the EXECABORT of the transaction.
func (s *RedisStore) transact(ctx context.Context, keys []string, argv []any, chunks [][]byte, c redis.Cmdable) ([]any, error) {
	args := make([]any, len(chunks))
	for i, c := range chunks {
		args[i] = c
	}
	for attempt := 1; ; attempt++ {
		var push *redis.IntCmd
		var script *redis.Cmd
		var err error
		if len(args) == 0 {
			script = c.EvalSha(ctx, scriptWrite.Hash(), keys, argv...)
			err = script.Err()
		} else {
			_, err = c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				push = pipe.RPushX(ctx, keys[1], args...)
				script = pipe.EvalSha(ctx, scriptWrite.Hash(), keys, argv...)
				return nil
			})
		}
		var reply redis.Error
		switch {
		case redis.HasErrorPrefix(script.Err(), "NOSCRIPT") && attempt < maxWriteAttempts:
			if err := scriptWrite.Load(ctx, s.client).Err(); err != nil {
				return nil, err
			}
			continue
		case push != nil && errors.As(push.Err(), &reply):
			return nil, push.Err()
		case err != nil:
			return nil, err
		}
		res, err := script.Slice()
		if err == nil && len(res) == 0 {
			err = fmt.Errorf("%w: empty script reply", ErrCorrupt)
		}
		if err != nil {
			return nil, err
		}
		if res[0] == "retry" && attempt < maxWriteAttempts {
			continue
		}
		return res, nil
	}
}

// writeResult turns scriptWrite's reply into Write's error.
func writeResult(id string, w ChunkWrite, res []any) error {
	switch code, _ := res[0].(string); code {
	case "ok":
		return nil
	case "missing":
		return ErrNotFound
	case "fenced":
		return ErrLeaseLost
	case "gap":
		return fmt.Errorf("write %s: %w before chunk %d", id, errGap, w.Index)
	case "lost":
		var have, want any = "?", "?"
		if len(res) == 3 {
			have, want = res[1], res[2]
		}
		return fmt.Errorf("%w: write %s: %v of its %v stored chunks are gone from Redis (evicted or deleted; Redis must run with maxmemory-policy noeviction)",
			ErrCorrupt, id, have, want)
	default:
		return fmt.Errorf("%w: write %s: reply %q", ErrCorrupt, id, code)
	}
}

// writeReplicated is the completing write of a Store.Write with Replicas,
// in two steps:
//
//  1. the last chunks, with the job still running, and its seal (checksum
//     and chunk count), then WAIT on the same connection (WAIT waits for
//     every write the server took up to that connection's last one;
//     replicas apply writes in order) until Replicas replicas have it:
//     else ErrNotReplicated, and the job has never read completed;
//  2. the completion, announced by its script. It needs no WAIT: a server
//     that lost it still has the seal, and completes the job when its
//     lease lapses (or when this write is repeated there).
//
// The first step is tried three times; repeating it is harmless, also on a
// new master after a failover (a write it still has is recognised, one it
// lost is made again, and chunks it lost fail the write with a gap).
func (s *RedisStore) writeReplicated(ctx context.Context, id string, keys []string, a writeArgs, w ChunkWrite) error {
	sealed := a
	sealed.final, sealed.seal = "", true // no final status yet; text and count stay
	if err := s.replicated(ctx, id, keys, sealed.argv(s.eventsChannel()), w); err != nil {
		return err
	}
	done := a
	done.index, done.chunks = w.Index+int64(len(w.Chunks)), 0 // every chunk is stored
	res, err := s.transact(ctx, keys, done.argv(s.eventsChannel()), nil, s.client)
	if err != nil {
		return err
	}
	return writeResult(id, w, res)
}

// replicated runs step 1 of writeReplicated, up to three times: the
// transaction, then WAIT on the same connection of the server that holds
// the job.
func (s *RedisStore) replicated(ctx context.Context, id string, keys []string, argv []any, w ChunkWrite) error {
	timeout := max(w.ReplicaTimeout, 10*time.Millisecond)
	var last error
	for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
		node, err := s.serverFor(ctx, keys[0])
		if err != nil {
			last = err
			continue
		}
		conn := node.Conn()
		res, err := s.transact(ctx, keys, argv, w.Chunks, conn)
		var acks int64
		if err == nil {
			if err = writeResult(id, w, res); err != nil {
				conn.Close()
				return err
			}
			acks, err = conn.Do(ctx, "WAIT", w.Replicas, timeout.Milliseconds()).Int64()
		}
		conn.Close()
		switch {
		case err != nil:
			last = err
		case acks < int64(w.Replicas):
			last = fmt.Errorf("%w: %d of %d replicas acknowledged the writes of %s within %v",
				ErrNotReplicated, acks, w.Replicas, id, timeout)
		default:
			return nil
		}
	}
	if last == nil {
		last = ctx.Err()
	}
	return last
}

// serverFor returns the client of the server that holds key: for a
// Cluster, its master's, so that a keyless WAIT goes to the same node as
// the writes it waits for.
func (s *RedisStore) serverFor(ctx context.Context, key string) (*redis.Client, error) {
	switch c := s.client.(type) {
	case *redis.ClusterClient:
		return c.MasterForKey(ctx, key)
	case *redis.Client:
		return c, nil
	default:
		return nil, fmt.Errorf("%w: MinReplicas needs a *redis.Client or a *redis.ClusterClient, not %T", ErrInvalid, s.client)
	}
}
