package exporter

import (
	"context"
	"errors"
	"fmt"
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
//	<prefix>{<id>}:abandoned  string: present for 10 minutes once a creation whose
//	                      caller was told it failed was undone (see Abandon)
//
// Every state change is one Lua script that checks the status and the
// lease token before it writes and sets the TTLs in the same step. A job
// reaching a terminal status is announced on the channel <prefix>events
// as "<id> <status> <job>", in the same script (see parseEvent). Each
// owner's jobs are listed in <prefix>owner:{<hash of owner>}:jobs, a
// sorted set with a TTL (see redis_list.go). A chunk write is a MULTI/EXEC
// (see redis_write.go) and lease renewals are pipelined (redis_lease.go).
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
	return []string{tag + "meta", tag + "data", tag + "lease", tag + "watch", tag + "abandoned"}
}

// eventsChannel is where the scripts announce terminal statuses, as
// "<id> <status>".
func (s *RedisStore) eventsChannel() string { return s.prefix + "events" }

// luaCommon is prepended to every script but scriptRenew.
//
// All scripts take KEYS[1] = meta, KEYS[2] = data, KEYS[3] = lease,
// KEYS[4] = watch (exists while someone runs WatchExport on the job),
// KEYS[5] = abandoned (exists for a while once a creation was abandoned:
// see scriptAbandon) and ARGV[1] = the events channel. They keep
// redis.call to a minimum (each costs about a microsecond): load() reads
// the fields they need in one HMGET and the lease token, ending first a
// live job whose lease lapsed; hold() renews the lease and the data list
// with one TTL, so they expire together; finish() ends a job, removing its
// data unless it completed, and announces it; reply() returns {code,
// field, value, ...}.
//
// While a job is live its data list starts with an empty header element:
// chunks are appended with RPUSHX, which does nothing once the list is
// gone, so a cancel, an ending or a lapsed lease (the list expires with
// the lease) fences every later chunk without the bytes passing through
// Lua. Completion removes the header.
const luaCommon = `
local meta, data, lease, watch, abandoned, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1]
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
-- finish() ends the job, then announces it. Its first write, PEXPIRE,
-- cannot grow memory, so Redis lets it through above maxmemory, and then
-- lets the rest of the script through too (it cannot stop a script half
-- way): an ending, which frees memory or keeps it as it is, is recorded
-- even when Redis refuses new jobs and new bytes. The announcement comes
-- right after that first write and before the others: Redis does not undo
-- a script's writes when a later call fails, so a PUBLISH refused (by an
-- ACL) leaves the job as it was, and no caller hears of an end that is not
-- recorded.
local function finish(j, st, field, value, t)
  redis.call('PEXPIRE', meta, j.retention)
  redis.call('PUBLISH', events, event(j, st, {status = st, [field] = value, finished = t, updated = t}))
  redis.call('HSET', meta, 'status', st, field, value, 'finished', t, 'updated', t)
  if st == 'completed' then
    redis.call('PEXPIRE', data, j.retention)
  else
    redis.call('DEL', data)
  end
  redis.call('DEL', lease)
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
    if f[9] and j.chunks == tonumber(f[10]) and redis.call('LLEN', data) >= 1 + j.chunks then
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
// Returns {"ok", created ms}, {"exists"} or {"abandoned"} (a late copy
// of a creation whose caller was told it failed).
var scriptCreate = redis.NewScript(luaCommon + `
if redis.call('EXISTS', meta) == 1 then return {'exists'} end
if redis.call('EXISTS', abandoned) == 1 then return {'abandoned'} end
local t = fmt(now())
redis.call('HSET', meta, 'created', t, 'updated', t, 'started', '0', 'finished', '0',
  'checksum', '', 'error', '', 'chunks', '0', unpack(ARGV, 5))
redis.call('PEXPIRE', meta, ARGV[4])
redis.call('SET', lease, ARGV[2], 'PX', ARGV[3])
redis.call('RPUSH', data, '')
redis.call('PEXPIRE', data, ARGV[3])
return {'ok', t}
`)

// scriptAbandon undoes a creation whose caller was told it failed (its
// reply came too late, or not at all): it removes the job if the creation
// was applied, and marks the id abandoned so that a copy of the creation
// that arrives later records nothing.
//
// ARGV[2] the creation's lease token, ARGV[3] how long the mark lasts, ms.
// Returns {"ok"}, or {"kept"} if the job exists and is not that
// creation's pending job (it began: it is not abandoned).
var scriptAbandon = redis.NewScript(luaCommon + `
if redis.call('GET', lease) == ARGV[2] and redis.call('HGET', meta, 'status') == 'pending' then
  redis.call('DEL', meta, data, lease)
end
if redis.call('EXISTS', meta) == 1 then return {'kept'} end
redis.call('SET', abandoned, '1', 'PX', ARGV[3])
return {'ok'}
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

// scriptWrite is Store.Write. It runs in one MULTI/EXEC with the RPUSHX
// of the write's chunks (if any), right after it, so that the two are
// applied together or not at all: a connection that dies half way through
// sending them, or delivers them late, can leave nothing behind but a
// whole copy of the pair, which this script recognises.
//
// KEYS[1] meta, KEYS[2] data, KEYS[3] lease, KEYS[4] watch
// ARGV[1]  events channel
// ARGV[2]  lease token
// ARGV[3]  lease TTL, ms
// ARGV[4]  "1" to move a pending job to running first, else "0"
// ARGV[5]  index of the write's first chunk
// ARGV[6]  number of chunks the RPUSHX before this script appended
// ARGV[7]  the job's Bytes once they are stored
// ARGV[8]  final status: "", "completed" or "failed"
// ARGV[9]  checksum (completed, or a seal) or error text (failed)
// ARGV[10] number of chunks a completed job holds
// ARGV[11] "seal" (with ARGV[8] "") to record ARGV[9] and ARGV[10] as what
//
//	completes the job once its lease lapses (see MinReplicas), else "0"
//
// Returns:
// {"ok"}
// {"fenced"}  the lease is not the job's (cancelled, finished, lapsed)
// {"gap"}     the chunks do not follow the stored ones
// {"lost", n, c} the data list holds n chunks of the c stored (evicted,
//
//	deleted, lost in a failover)
//
// {"retry"}   the list held elements past the stored chunks besides this
//
//	write's (a pipeline whose script never ran): they were removed,
//	and the write must be sent again
//
// {"missing"} the job does not exist
var scriptWrite = redis.NewScript(luaCommon + `
local j = load()
if not j then return {'missing'} end
local st, final, n, c = j.status, ARGV[8], tonumber(ARGV[6]), j.chunks
-- The list holds the header of a live job, then exactly the c chunks this
-- script verified. Whatever lies past them was appended by the RPUSHX of
-- this transaction (n elements), or by one whose script never ran (a
-- NOSCRIPT reply): trim() removes it all.
local base = (st == 'completed') and 0 or 1
local len = redis.call('LLEN', data)
local function trim()
  if len <= base + c then return end
  if base + c == 0 then redis.call('DEL', data) else redis.call('LTRIM', data, 0, base + c - 1) end
end
-- A pending job must begin before it takes bytes, or be failed (Shutdown).
local ok = st == 'running' or (st == 'pending' and (ARGV[4] == '1' or final == 'failed'))
if not ok or j.token ~= ARGV[2] then
  -- Drop this write's chunks. The list of a job whose lease is gone is gone
  -- too; a completed job's list only takes the RPUSHX of a retried final
  -- write; so this touches no one else's chunks.
  trim()
  if final ~= '' and st == final then
    local field = (final == 'completed') and 'checksum' or 'error'
    if j[field] == ARGV[9] then return {'ok'} end
  end
  return {'fenced'}
end
local t = fmt(now())
if final == 'failed' then
  finish(j, 'failed', 'error', ARGV[9], t)
  return {'ok'}
end
-- First a write that cannot grow memory (see finish): above maxmemory
-- Redis refuses the RPUSHX of new bytes, but records a completion.
redis.call('PEXPIRE', meta, j.retention)
if len < base + c then
  trim()
  return {'lost', math.max(len - base, 0), c}
end
local idx, extra = tonumber(ARGV[5]), len - base - c
local set = {'updated', t}
if n > 0 then
  if idx + n <= c then
    trim() -- stored already: a repeated write
  elseif idx ~= c then
    trim()
    return {'gap'}
  elseif extra ~= n then
    trim()
    return {'retry'}
  else
    c = c + n -- exactly this write's chunks follow the stored ones: keep them
    table.insert(set, 'chunks'); table.insert(set, c)
  end
elseif extra > 0 then
  trim()
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
  return {'ok'}
end
hold(ARGV[3])
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
	// same round trip (see redis_list.go).
	index := s.ownerKey(job.Owner)
	var old *redis.Cmd
	res, err := s.pipelined(ctx, scriptCreate, s.keys(job.ID), args, func(pipe redis.Pipeliner) {
		old = s.indexJob(ctx, pipe, index, job.ID, retention)
	})
	if err == nil {
		s.prune(ctx, index, old)
	}
	if err != nil {
		return nil, err
	}
	if len(res) != 2 || res[0] != "ok" {
		return nil, fmt.Errorf("exporter: create %s: %v", job.ID, res[0])
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

// Get implements Store. A status read is one round trip, with no script
// (which costs Redis several times more): the job hash and whether its
// lease exists. Only a live job whose lease is gone costs scriptGet,
// which checks again and ends the job. No clock is compared: the lease
// key's own expiry, kept by Redis, decides.
func (s *RedisStore) Get(ctx context.Context, id, owner string) (*Job, error) {
	k := s.keys(id)
	pipe := s.client.Pipeline()
	hash := pipe.HGetAll(ctx, k[0])
	held := pipe.Exists(ctx, k[2])
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	h := hash.Val()
	if len(h) == 0 || owner != "" && h[fOwner] != owner {
		return nil, ErrNotFound
	}
	j, err := decodeJob(h)
	if err != nil {
		return nil, err
	}
	if lapsed(j, held.Val()) {
		_, j, err = s.run(ctx, scriptGet, id, owner)
	}
	return j, err
}

// lapsed reports whether j is live while its lease key is gone (exists is
// what EXISTS said of it).
func lapsed(j *Job, exists int64) bool {
	return (j.Status == StatusPending || j.Status == StatusRunning) && exists == 0
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

// abandonedTTL is how long an abandoned creation's mark lasts: longer
// than any copy of it can take to arrive.
const abandonedTTL = 10 * time.Minute

// Abandon implements Store.
func (s *RedisStore) Abandon(ctx context.Context, id string, lease Lease) error {
	_, _, err := s.run(ctx, scriptAbandon, id, lease.Token, abandonedTTL.Milliseconds())
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
