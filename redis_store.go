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
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// RedisStore is the Store on Redis: a standalone server, Sentinel-managed
// servers (redis.NewFailoverClient) or a Redis Cluster. Create one with
// NewRedisStore. It is safe for concurrent use.
//
// Each job lives in keys that share the hash tag {id}, so every script
// touches one Cluster slot:
//
//	<prefix>{<id>}:meta   hash: the job (see the field names in job.go)
//	<prefix>{<id>}:data   list: the chunks, in order
//	<prefix>{<id>}:lease  string: the running instance's token, with PX = lease TTL
//	<prefix>{<id>}:watch  string: present (with a TTL) while WatchExport runs on the job
//
// Every state change is one Lua script that checks the status and the
// lease token before it writes and sets the TTLs in the same step. A job
// reaching a terminal status is announced on the channel <prefix>events
// as "<id> <status> <job>", in the same script (see parseEvent). Each
// owner's jobs are listed in <prefix>owner:{<hash of owner>}:jobs, a
// sorted set with a TTL.
//
// RedisStore never closes the client it was given.
type RedisStore struct {
	client redis.UniversalClient
	prefix string
	err    error // from WithPrefix, reported by New
}

var _ Store = (*RedisStore)(nil)

// DefaultPrefix is the key and channel prefix of NewRedisStore.
const DefaultPrefix = "exporter:"

// NewRedisStore returns a Store that keeps jobs in client under
// DefaultPrefix. client may be a *redis.Client, a failover client or a
// *redis.ClusterClient. For calls to return by their ctx deadline, create
// the client with ContextTimeoutEnabled: true (see the package doc).
func NewRedisStore(client redis.UniversalClient) *RedisStore {
	return &RedisStore{client: client, prefix: DefaultPrefix}
}

// WithPrefix returns a copy of s that uses prefix for its keys and
// channels, so several services (or tests) can share one Redis. The prefix
// must not contain '{' or '}', which would break the per-job hash tag; an
// invalid prefix is reported by New.
func (s *RedisStore) WithPrefix(prefix string) *RedisStore {
	c := *s
	c.prefix = prefix
	if strings.ContainsAny(prefix, "{}") {
		c.err = fmt.Errorf("%w: RedisStore prefix %q contains '{' or '}'", ErrInvalid, prefix)
	}
	return &c
}

// validate is called by New: a nil client or a bad prefix is a
// configuration error, not a later panic.
func (s *RedisStore) validate() error {
	if s.client == nil {
		return fmt.Errorf("%w: NewRedisStore was given a nil client", ErrInvalid)
	}
	return s.err
}

// keys returns the job's keys in the order the scripts expect them.
func (s *RedisStore) keys(id string) []string {
	tag := s.prefix + "{" + id + "}:"
	return []string{tag + "meta", tag + "data", tag + "lease", tag + "watch"}
}

// ownerKey is the sorted set of an owner's job ids, scored by creation
// time in ms. The owner's name is hashed: it may hold any byte, braces
// included, and must not pick the Cluster slot.
func (s *RedisStore) ownerKey(owner string) string {
	sum := sha256.Sum256([]byte(owner))
	return s.prefix + "owner:{" + hex.EncodeToString(sum[:12]) + "}:jobs"
}

// indexTTL is how long an owner's index outlives its newest entry: jobs
// live Retention after their last update, and a long run updates them
// later than its creation, so the index keeps twice that.
func indexTTL(retention time.Duration) time.Duration { return 2 * retention }

// eventsChannel is where the scripts announce terminal statuses, as
// "<id> <status>".
func (s *RedisStore) eventsChannel() string { return s.prefix + "events" }

// luaCommon is prepended to every script.
//
// All scripts take KEYS[1] = meta, KEYS[2] = data, KEYS[3] = lease,
// KEYS[4] = watch (exists while someone runs WatchExport on the job) and
// ARGV[1] = the events channel. They keep redis.call to a minimum (each
// costs about a microsecond): load() reads the fields they need in one
// HMGET and the lease token, ending first a live job whose lease lapsed;
// keep() records an update and renews meta's retention TTL; hold() renews
// the lease and the data list with one TTL, so they expire together;
// finish() ends a job, removing its data unless it completed, and
// announces it; reply() returns {code, field, value, ...}.
//
// While a job is live its data list starts with an empty header element:
// chunks are appended with RPUSHX, which does nothing once the list is
// gone, so a cancel, an ending or a lapsed lease (the list expires with
// the lease) fences every later chunk without the bytes passing through
// Lua. Completion removes the header.
const luaCommon = `
local meta, data, lease, watch, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fmt(n) return string.format('%d', n) end
local function hold(ttl)
  redis.call('PEXPIRE', lease, ttl)
  redis.call('PEXPIRE', data, ttl)
end
local function reply(code)
  local r = redis.call('HGETALL', meta)
  table.insert(r, 1, code)
  return r
end
local function live(st) return st == 'pending' or st == 'running' end
-- j: status, retention, id, owner, bytes, checksum, error; token
-- event() is the end event of the job as it is, with set's fields
-- changed: "<id> <status> <job>", each string of the job hash as
-- <length>:<bytes>, so that waiters need not read the job again.
local function event(j, st, set)
  local h = redis.call('HGETALL', meta)
  for i = 1, #h, 2 do
    if set[h[i]] then h[i + 1] = set[h[i]] end
  end
  for i = 1, #h do h[i] = #h[i] .. ':' .. h[i] end
  return j.id .. ' ' .. st .. ' ' .. table.concat(h)
end
-- finish() ends the job and announces it. It publishes before any write:
-- Redis does not undo a script's writes when a later call fails (say,
-- PUBLISH refused by an ACL), and an end must not be recorded by a call
-- that reports an error.
local function finish(j, st, field, value, t)
  redis.call('PUBLISH', events, event(j, st, {status = st, [field] = value, finished = t, updated = t}))
  redis.call('HSET', meta, 'status', st, field, value, 'finished', t, 'updated', t)
  if st == 'completed' then
    redis.call('PEXPIRE', data, j.retention)
  else
    redis.call('DEL', data)
  end
  redis.call('DEL', lease)
  redis.call('PEXPIRE', meta, j.retention)
  j.status = st
  j[field] = value
end
local function load()
  local f = redis.call('HMGET', meta, 'status', 'retention', 'id', 'owner', 'bytes', 'checksum', 'error', 'chunks',
    'seal', 'sealcount')
  if not f[1] then return nil end
  local j = {status = f[1], retention = f[2], id = f[3], owner = f[4], bytes = f[5], checksum = f[6], error = f[7],
    chunks = tonumber(f[8]) or 0}
  j.token = redis.call('GET', lease)
  if live(j.status) and not j.token then
    -- A sealed job (all its chunks stored and acknowledged by replicas,
    -- with its checksum: see MinReplicas) completes; any other fails.
    if f[9] and j.chunks == tonumber(f[10]) and redis.call('EXISTS', data) == 1 then
      redis.call('LTRIM', data, 0, j.chunks) -- the header and the chunks
      redis.call('LPOP', data)
      finish(j, 'completed', 'checksum', f[9], fmt(now()))
    else
      finish(j, 'failed', 'error', '` + "exporter: worker lost" + `', fmt(now()))
    end
  end
  return j
end
`

// scriptCreate records a new pending job, its lease and its data list
// (the header alone).
//
// ARGV[2] token, ARGV[3] lease TTL ms, ARGV[4] retention ms,
// ARGV[5..] field, value pairs of the job hash.
// Returns {"ok", created ms} or {"exists"}.
var scriptCreate = redis.NewScript(luaCommon + `
if redis.call('EXISTS', meta) == 1 then return {'exists'} end
local t = fmt(now())
redis.call('HSET', meta, 'created', t, 'updated', t, 'started', '0', 'finished', '0',
  'checksum', '', 'error', '', 'chunks', '0', unpack(ARGV, 5))
redis.call('PEXPIRE', meta, ARGV[4])
redis.call('SET', lease, ARGV[2], 'PX', ARGV[3])
redis.call('RPUSH', data, '')
redis.call('PEXPIRE', data, ARGV[3])
return {'ok', t}
`)

// scriptGet reads a job, ending it first if its lease lapsed.
//
// ARGV[2] owner ("" = any). Returns {"ok", job...} or {"missing"} (also
// for another owner's job, which it leaves untouched).
var scriptGet = redis.NewScript(luaCommon + `
local o = redis.call('HGET', meta, 'owner')
if not o or (ARGV[2] ~= '' and o ~= ARGV[2]) then return {'missing'} end
load()
return reply('ok')
`)

// scriptWrite is Store.Write, run right after the RPUSHX of the write's
// chunks (if any) on the same connection: it checks what that stored.
//
// ARGV[2] token, ARGV[3] lease TTL ms, ARGV[4] "1" to begin, ARGV[5] index
// of the write's first chunk, ARGV[6] its number of chunks, ARGV[7] Bytes
// after them, ARGV[8] final status ("", "completed", "failed"), ARGV[9]
// checksum or error text, ARGV[10] number of chunks a completed job holds,
// ARGV[11] "seal" (with ARGV[8] "") to record ARGV[9] and ARGV[10] as what
// completes the job once all its chunks are stored, else "0".
// Returns {"ok"}, {"fenced"}, {"gap"} (chunks missing) or {"missing"}.
var scriptWrite = redis.NewScript(luaCommon + `
local j = load()
if not j then return {'missing'} end
local st, final, n, c = j.status, ARGV[8], tonumber(ARGV[6]), j.chunks
-- Keep exactly the chunks this script has verified (the hash's count):
-- what lies past them in the list are copies of the current write's chunks
-- that RPUSHX appended, once or more (go-redis repeats a command whose
-- reply was lost; Write repeats the pipeline after NOSCRIPT).
local function keep(k)
  local base = (st == 'completed') and 0 or 1 -- a live list has its header
  if redis.call('LLEN', data) > base + k then redis.call('LTRIM', data, 0, base + k - 1) end
end
-- A pending job must begin before it takes bytes, or be failed (Shutdown).
local ok = st == 'running' or (st == 'pending' and (ARGV[4] == '1' or final == 'failed'))
if not ok or j.token ~= ARGV[2] then
  -- Drop this write's chunks. The list of a job whose lease is gone is gone
  -- too; a completed job's list only takes the RPUSHX of a retried final
  -- write; so this touches no one else's chunks.
  if n > 0 then keep(c) end
  if final ~= '' and st == final then
    local field = (final == 'completed') and 'checksum' or 'error'
    if j[field] == ARGV[9] then return {'ok'} end
  end
  return {'fenced'}
end
local t = fmt(now())
local idx = tonumber(ARGV[5])
local set = {'updated', t}
if n > 0 then
  if idx + n <= c then
    keep(c) -- stored already: a repeated write
  elseif idx ~= c or redis.call('LLEN', data) < 1 + c + n then
    keep(c) -- chunks before these are missing, or these did not arrive
    return {'gap'}
  else
    keep(c + n) -- the first copy of these chunks stays
    c = c + n
    table.insert(set, 'chunks'); table.insert(set, c)
  end
end
if tonumber(j.bytes) < tonumber(ARGV[7]) then
  table.insert(set, 'bytes'); table.insert(set, ARGV[7])
end
if st == 'pending' and ARGV[4] == '1' then
  table.insert(set, 'status'); table.insert(set, 'running')
  table.insert(set, 'started'); table.insert(set, t)
end
redis.call('HSET', meta, unpack(set))
if final == 'completed' then
  if c ~= tonumber(ARGV[10]) then return {'gap'} end
  redis.call('LPOP', data)
  finish(j, 'completed', 'checksum', ARGV[9], t)
elseif final == 'failed' then
  finish(j, 'failed', 'error', ARGV[9], t)
else
  hold(ARGV[3])
  redis.call('PEXPIRE', meta, j.retention)
  if ARGV[11] == 'seal' then
    -- Every chunk is stored: record what completes the job, so that any
    -- server with these writes can complete it, and keep the data for the
    -- retention, past the lease.
    if c ~= tonumber(ARGV[10]) then return {'gap'} end
    redis.call('HSET', meta, 'seal', ARGV[9], 'sealcount', ARGV[10])
    redis.call('PEXPIRE', data, j.retention)
  end
  -- Progress is announced only while someone watches the job.
  if redis.call('EXISTS', watch) == 1 then
    redis.call('PUBLISH', events, j.id .. ' running')
  end
end
return {'ok'}
`)

// scriptRenew extends a lease and the job's retention.
//
// ARGV[2] token, ARGV[3] lease TTL ms. Returns {"ok"}, {"fenced"} or
// {"missing"}.
var scriptRenew = redis.NewScript(luaCommon + `
local j = load()
if not j then return {'missing'} end
if not live(j.status) or j.token ~= ARGV[2] then return {'fenced'} end
hold(ARGV[3])
redis.call('HSET', meta, 'updated', fmt(now()))
redis.call('PEXPIRE', meta, j.retention)
return {'ok'}
`)

// scriptCancel cancels a pending or running job.
//
// ARGV[2] owner ("" = any), ARGV[3] reason.
// Returns {"ok", job...} (cancelled now or before), {"finished", job...}
// or {"missing"} (also for another owner's job, left untouched).
var scriptCancel = redis.NewScript(luaCommon + `
local o = redis.call('HGET', meta, 'owner')
if not o or (ARGV[2] ~= '' and o ~= ARGV[2]) then return {'missing'} end
local j = load()
if j.status == 'cancelled' then return reply('ok') end
if not live(j.status) then return reply('finished') end
finish(j, 'cancelled', 'error', ARGV[3], fmt(now()))
return reply('ok')
`)

// run executes script on the job's keys and splits its reply into the
// code and the job, if the reply carries one.
func (s *RedisStore) run(ctx context.Context, script *redis.Script, id string, args ...any) (string, *Job, error) {
	argv := make([]any, 0, len(args)+1)
	argv = append(argv, s.eventsChannel())
	argv = append(argv, args...)
	res, err := script.Run(ctx, s.client, s.keys(id), argv...).Slice()
	if err != nil {
		return "", nil, err
	}
	return s.parse(id, res)
}

// parse splits a script's reply into its code and the job, if it carries one.
func (s *RedisStore) parse(id string, res []any) (string, *Job, error) {
	if len(res) == 0 || len(res)%2 == 0 {
		return "", nil, fmt.Errorf("%w: unexpected script reply of %d elements", ErrCorrupt, len(res))
	}
	code, _ := res[0].(string)
	if code == "missing" {
		return code, nil, ErrNotFound
	}
	if len(res) == 1 {
		return code, nil, nil
	}
	h := make(map[string]string, len(res)/2)
	for i := 1; i+1 < len(res); i += 2 {
		k, _ := res[i].(string)
		v, _ := res[i+1].(string)
		h[k] = v
	}
	j, err := decodeJob(h)
	return code, j, err
}

// Create implements Store.
func (s *RedisStore) Create(ctx context.Context, job *Job, lease Lease, retention time.Duration) (*Job, error) {
	fields, err := encodeJob(job, retention)
	if err != nil {
		return nil, err
	}
	fields = append(fields, fLease, lease.TTL.Milliseconds())
	args := append([]any{s.eventsChannel(), lease.Token, lease.TTL.Milliseconds(), retention.Milliseconds()}, fields...)
	// The owner's index lives in another Cluster slot than the job, so it
	// cannot be written by the same script: it is written first, in the
	// same round trip, and List skips entries whose job does not exist.
	index, now := s.ownerKey(job.Owner), time.Now()
	res, err := s.pipelined(ctx, scriptCreate, s.keys(job.ID), args, func(pipe redis.Pipeliner) {
		pipe.ZAdd(ctx, index, redis.Z{Score: float64(now.UnixMilli()), Member: job.ID})
		pipe.ZRemRangeByScore(ctx, index, "-inf", strconv.FormatInt(now.Add(-indexTTL(retention)).UnixMilli(), 10))
		pipe.PExpire(ctx, index, indexTTL(retention))
	})
	if err != nil {
		return nil, err
	}
	if len(res) != 2 || res[0] != "ok" {
		return nil, fmt.Errorf("exporter: create %s: id already exists", job.ID)
	}
	ms, err := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: create %s: time %v", ErrCorrupt, job.ID, res[1])
	}
	// The hash holds exactly job and these times: no need to read it back.
	j := job.clone()
	j.CreatedAt = time.UnixMilli(ms).UTC()
	j.UpdatedAt, j.ExpiresAt = j.CreatedAt, j.CreatedAt.Add(retention.Truncate(time.Millisecond))
	return j, nil
}

// Get implements Store. A status read is one HGETALL: no script, which
// costs Redis several times more. A live job's lease runs LeaseTTL from its
// last update, when the holder last renewed it; only when the local clock
// says that time has passed does Get run scriptGet, which checks the lease
// itself and ends the job if it lapsed. A local clock behind the server's
// delays that by the difference; one ahead costs a script call or two.
func (s *RedisStore) Get(ctx context.Context, id, owner string) (*Job, error) {
	h, err := s.client.HGetAll(ctx, s.keys(id)[0]).Result()
	if err != nil {
		return nil, err
	}
	if len(h) == 0 || owner != "" && h[fOwner] != owner {
		return nil, ErrNotFound
	}
	j, err := decodeJob(h)
	if err != nil {
		return nil, err
	}
	if mayHaveLapsed(h, j) {
		_, j, err = s.run(ctx, scriptGet, id, owner)
	}
	return j, err
}

// mayHaveLapsed reports whether j is live and, by the local clock, its
// lease (renewed with every update) may have run out.
func mayHaveLapsed(h map[string]string, j *Job) bool {
	if j.Status != StatusPending && j.Status != StatusRunning {
		return false
	}
	ttl, _ := strconv.ParseInt(h[fLease], 10, 64)
	return !time.Now().Before(j.UpdatedAt.Add(time.Duration(ttl) * time.Millisecond))
}

// Write implements Store. The chunks go to the data list with RPUSHX,
// pipelined with scriptWrite on the same connection: one round trip, and
// the bytes never pass through Lua (which copies every argument twice and
// held throughput to about a third of a plain RPUSH).
func (s *RedisStore) Write(ctx context.Context, id string, lease Lease, w ChunkWrite) error {
	text := w.Checksum
	if w.Final == StatusFailed {
		text = w.Reason
	}
	begin := "0"
	if w.Begin {
		begin = "1"
	}
	keys := s.keys(id)
	argv := []any{s.eventsChannel(), lease.Token, lease.TTL.Milliseconds(), begin, w.Index, len(w.Chunks),
		w.Bytes, string(w.Final), text, w.Count, "0"}
	push := func(pipe redis.Pipeliner) {
		if len(w.Chunks) > 0 {
			chunks := make([]any, len(w.Chunks))
			for i, c := range w.Chunks {
				chunks[i] = c
			}
			pipe.RPushX(ctx, keys[1], chunks...)
		}
	}
	if w.Final == StatusCompleted && w.Replicas > 0 {
		return s.writeReplicated(ctx, id, keys, argv, push, w)
	}
	res, err := s.pipelined(ctx, scriptWrite, keys, argv, push)
	if err != nil {
		return err
	}
	return writeResult(id, w, res)
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
		return fmt.Errorf("exporter: write %s: %w before chunk %d", id, errGap, w.Index)
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
func (s *RedisStore) writeReplicated(ctx context.Context, id string, keys []string, argv []any, push func(redis.Pipeliner), w ChunkWrite) error {
	sealed := slices.Clone(argv)
	sealed[7], sealed[10] = "", "seal" // no final status yet; text and count stay
	if _, err := s.replicated(ctx, id, keys, sealed, push, w); err != nil {
		return err
	}
	done := slices.Clone(argv)
	done[4], done[5] = w.Index+int64(len(w.Chunks)), 0 // no chunks left
	res, err := s.pipelined(ctx, scriptWrite, keys, done, func(redis.Pipeliner) {})
	if err != nil {
		return err
	}
	return writeResult(id, w, res)
}

// replicated runs one step of writeReplicated: scriptWrite with argv after
// push, then WAIT, up to three times.
func (s *RedisStore) replicated(ctx context.Context, id string, keys []string, argv []any, push func(redis.Pipeliner), w ChunkWrite) ([]any, error) {
	timeout := max(w.ReplicaTimeout, 10*time.Millisecond)
	var (
		last error
		res  []any
	)
	for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
		pipe, err := s.pipelineFor(ctx, keys[0])
		if err != nil {
			last = err
			continue
		}
		push(pipe)
		cmd := pipe.EvalSha(ctx, scriptWrite.Hash(), keys, argv...)
		acks := pipe.Do(ctx, "WAIT", w.Replicas, timeout.Milliseconds())
		_, err = pipe.Exec(ctx)
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			last = scriptWrite.Load(ctx, s.client).Err()
			continue
		}
		if err != nil {
			last = err
			continue
		}
		if res, err = cmd.Slice(); err != nil || len(res) == 0 {
			return nil, fmt.Errorf("%w: write %s: reply %v (%v)", ErrCorrupt, id, res, err)
		}
		if err := writeResult(id, w, res); err != nil {
			return nil, err
		}
		if n, _ := acks.Int64(); n < int64(w.Replicas) {
			last = fmt.Errorf("%w: %d of %d replicas acknowledged the writes of %s within %v",
				ErrNotReplicated, n, w.Replicas, id, timeout)
			continue
		}
		return res, nil
	}
	if last == nil {
		last = ctx.Err()
	}
	return res, last
}

// pipelineFor returns a pipeline on the connection pool of the server that
// holds key: for a Cluster, its master's, so that a keyless WAIT goes to
// the same node as the writes it waits for.
func (s *RedisStore) pipelineFor(ctx context.Context, key string) (redis.Pipeliner, error) {
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, key)
		if err != nil {
			return nil, err
		}
		return node.Pipeline(), nil
	}
	return s.client.Pipeline(), nil
}

// pipelined runs script after the commands that before adds, in one
// pipeline on one connection (per Cluster node), and returns the script's
// reply. The script is run by hash; if the server does not have it (a new
// or restarted server), it is loaded and the whole pipeline runs again, so
// the commands before it must be safe to repeat (the scripts undo a
// repeated RPUSHX).
func (s *RedisStore) pipelined(ctx context.Context, script *redis.Script, keys []string, argv []any, before func(redis.Pipeliner)) ([]any, error) {
	for attempt := 0; ; attempt++ {
		pipe := s.client.Pipeline()
		before(pipe)
		cmd := pipe.EvalSha(ctx, script.Hash(), keys, argv...)
		_, err := pipe.Exec(ctx)
		if attempt == 0 && redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			if err := script.Load(ctx, s.client).Err(); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		res, err := cmd.Slice()
		if err == nil && len(res) == 0 {
			err = fmt.Errorf("%w: empty script reply", ErrCorrupt)
		}
		return res, err
	}
}

// Renew implements Store.
func (s *RedisStore) Renew(ctx context.Context, id string, lease Lease) error {
	code, _, err := s.run(ctx, scriptRenew, id, lease.Token, lease.TTL.Milliseconds())
	_, err = fenced(code, nil, err)
	return err
}

// Cancel implements Store.
func (s *RedisStore) Cancel(ctx context.Context, id, owner, reason string) (*Job, error) {
	code, j, err := s.run(ctx, scriptCancel, id, owner, reason)
	if err == nil && code == "finished" {
		err = ErrFinished
	}
	return j, err
}

func fenced(code string, j *Job, err error) (*Job, error) {
	if err == nil && code == "fenced" {
		err = ErrLeaseLost
	}
	return j, err
}

// Watch implements Store.
func (s *RedisStore) Watch(ctx context.Context, id string, ttl time.Duration) error {
	return s.client.Set(ctx, s.keys(id)[3], "1", ttl).Err()
}

// ReadChunks implements Store. The returned slices alias the reply's
// strings without a copy; the Exporter only reads them.
func (s *RedisStore) ReadChunks(ctx context.Context, id string, first, n int) ([][]byte, error) {
	if n <= 0 {
		return nil, nil
	}
	k := s.keys(id)
	vals, err := s.client.LRange(ctx, k[1], int64(first), int64(first+n-1)).Result()
	if err != nil {
		return nil, err
	}
	if len(vals) == 0 {
		// An empty range is either a job without those chunks or a job that
		// expired; tell them apart so callers can report ErrNotFound.
		ok, err := s.client.Exists(ctx, k[0]).Result()
		if err != nil {
			return nil, err
		}
		if ok == 0 {
			return nil, ErrNotFound
		}
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		out[i] = unsafe.Slice(unsafe.StringData(v), len(v))
	}
	return out, nil
}

// Subscribe implements Store.
func (s *RedisStore) Subscribe(ctx context.Context) (Subscription, error) {
	ps := s.client.Subscribe(ctx, s.eventsChannel())
	// Wait for the confirmation, so that an event after Subscribe returns
	// is never missed.
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, err
	}
	return &redisSubscription{ps: ps}, nil
}

type redisSubscription struct{ ps *redis.PubSub }

func (r *redisSubscription) Receive(ctx context.Context, timeout time.Duration) (Event, error) {
	// Close the subscription if ctx ends while we wait, so that a caller
	// whose ctx has no deadline is not kept waiting.
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { r.ps.Close(); close(closed) })
	defer func() {
		if !stop() {
			<-closed
		}
	}()
	deadline := time.Time{}
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		wait := time.Duration(0)
		if !deadline.IsZero() {
			if wait = time.Until(deadline); wait <= 0 {
				return Event{}, nil
			}
		}
		msg, err := r.ps.ReceiveTimeout(ctx, wait)
		if ctx.Err() != nil {
			return Event{}, ctx.Err()
		}
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			return Event{}, nil
		}
		if err != nil {
			return Event{}, err
		}
		if m, ok := msg.(*redis.Message); ok {
			if ev, ok := parseEvent(m.Payload); ok {
				return ev, nil
			}
		}
		// Subscription confirmations, pongs, malformed payloads: keep waiting.
	}
}

func (r *redisSubscription) Close() error { return r.ps.Close() }

// parseEvent reads "<id> <status> <job>", where <job> is the job hash's
// strings, each as <length>:<bytes>. A job that does not decode is left
// out: the event still wakes its waiters, who then read the store.
func parseEvent(payload string) (Event, bool) {
	id, rest, _ := strings.Cut(payload, " ")
	st, packed, _ := strings.Cut(rest, " ")
	ev := Event{ID: id, Status: Status(st)}
	if !validID(id) || !ev.Status.valid() {
		return Event{}, false
	}
	if !ev.Status.Terminal() {
		return ev, true // progress of a watched job: no job attached
	}
	h := make(map[string]string, 16)
	var key string
	for i := 0; packed != ""; i++ {
		n, tail, ok := strings.Cut(packed, ":")
		size, err := strconv.Atoi(n)
		if !ok || err != nil || size < 0 || size > len(tail) {
			return ev, true
		}
		if i%2 == 0 {
			key = tail[:size]
		} else {
			h[key] = tail[:size]
		}
		packed = tail[size:]
	}
	if j, err := decodeJob(h); err == nil && j.ID == id && j.Status == ev.Status {
		ev.Job = j
	}
	return ev, true
}

// List implements Store. A cursor is "<score>:<id>" of the last job of the
// previous page; ties in score are ordered by id, as the sorted set does.
func (s *RedisStore) List(ctx context.Context, owner, cursor string, limit int) ([]*Job, string, error) {
	index := s.ownerKey(owner)
	max, after := "+inf", ""
	if cursor != "" {
		score, id, ok := strings.Cut(cursor, ":")
		if _, err := strconv.ParseInt(score, 10, 64); !ok || err != nil || !validID(id) {
			return nil, "", fmt.Errorf("%w: list cursor %q", ErrInvalid, cursor)
		}
		max, after = score, cursor
	}
	var (
		jobs    []*Job
		offset  int64
		cursors []string
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
		for i, id := range ids {
			hashes[i] = pipe.HGetAll(ctx, s.keys(id)[0])
		}
		if len(ids) > 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				return nil, "", err
			}
		}
		var gone []any
		for i, h := range hashes {
			j, err := decodeJob(h.Val())
			if err != nil || j.Owner != owner {
				gone = append(gone, ids[i])
				continue
			}
			if mayHaveLapsed(h.Val(), j) {
				if j, err = s.Get(ctx, ids[i], owner); err != nil {
					continue
				}
			}
			jobs, cursors = append(jobs, j), append(cursors, marks[i])
		}
		if len(gone) > 0 {
			s.client.ZRem(ctx, index, gone...) // forgetting is best effort
		}
		if int64(len(entries)) < batch {
			break // the index has no more
		}
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
