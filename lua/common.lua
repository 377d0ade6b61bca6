-- common.lua is prepended to every script of a job but renew.lua.
--
-- KEYS[1] -> <prefix>{<id>}:meta       hash: the job
-- KEYS[2] -> <prefix>{<id>}:data       list: a header element while the job is live, then the chunks
-- KEYS[3] -> <prefix>{<id>}:lease      string: the holder's token, PX = its lease TTL
-- KEYS[4] -> <prefix>{<id>}:watch      string: present while someone runs WatchExport on the job
-- KEYS[5] -> <prefix>{<id>}:abandoned  string: present a while once a creation was abandoned
-- ARGV[1] -> <prefix>events, the channel that announces ends
--
-- Helpers (each redis.call costs about a microsecond, so they make few):
-- load()   reads the fields the scripts need in one HMGET, and the lease
--          token; it first ends a live job whose lease lapsed (a sealed one
--          completes, any other fails with code "worker_lost"), but for a
--          durable export, which waits for its next attempt
-- hold()   renews the lease and the data list with one TTL, so they expire
--          together (a durable export's data list keeps its retention)
-- finish() ends a job, then announces it (see its comment)
-- reply()  returns {code, field, value, ...} of the job hash
--
-- While a job is live its data list starts with an empty header element:
-- chunks are appended with RPUSHX, which does nothing once the list is
-- gone, so a cancel, an ending or a lapsed lease (the list expires with
-- the lease) fences every later chunk without the bytes passing through
-- Lua. Completion removes the header.
local meta, data, lease, watch, abandoned, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1]
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fmt(n) return string.format('%d', n) end
local function hold(j, ttl)
  redis.call('PEXPIRE', lease, ttl)
  -- A durable export's data outlives a lapsed lease (another attempt
  -- resumes from it); it is kept for the job's retention instead.
  if j.kind == '' then
    redis.call('PEXPIRE', data, ttl)
  else
    redis.call('PEXPIRE', data, j.retention)
  end
end
local function reply(code)
  local r = redis.call('HGETALL', meta)
  table.insert(r, 1, code)
  return r
end
local function live(st) return st == 'pending' or st == 'running' end
-- j: status, retention, id, owner, bytes, checksum, error; token
-- event() is the end event of the job as it is, with the fields of set
-- (name, value, ...) changed or added: "<id> <status> <job>", each string
-- of the job hash as <length>:<bytes>, so that waiters need not read the
-- job again.
local function event(j, st, set)
  local h = redis.call('HGETALL', meta)
  local at = {}
  for i = 1, #h, 2 do at[h[i]] = i + 1 end
  for i = 1, #set, 2 do
    local k = at[set[i]]
    if k then
      h[k] = set[i + 1]
    else
      h[#h + 1] = set[i]
      h[#h + 1] = set[i + 1]
    end
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
-- f holds the fields the ending sets besides the status and times (name,
-- value, ...): the checksum, or the error text and code.
local function finish(j, st, f, t)
  local set = {'status', st, 'finished', t, 'updated', t}
  for i = 1, #f do set[#set + 1] = f[i] end
  redis.call('PEXPIRE', meta, j.retention)
  redis.call('PUBLISH', events, event(j, st, set))
  redis.call('HSET', meta, unpack(set))
  if st == 'completed' then
    redis.call('PEXPIRE', data, j.retention)
  else
    redis.call('DEL', data)
  end
  redis.call('DEL', lease)
  j.status = st
  for i = 1, #f, 2 do j[f[i]] = f[i + 1] end
end
local function load()
  local f = redis.call('HMGET', meta, 'status', 'retention', 'id', 'owner', 'bytes', 'checksum', 'error', 'chunks',
    'seal', 'sealcount', 'kind')
  if not f[1] then return nil end
  local j = {status = f[1], retention = f[2], id = f[3], owner = f[4], bytes = f[5], checksum = f[6], error = f[7],
    chunks = tonumber(f[8]) or 0, kind = f[11] or ''}
  j.token = redis.call('GET', lease)
  if live(j.status) and not j.token then
    -- A sealed job (all its chunks stored and acknowledged by replicas,
    -- with its checksum: see MinReplicas) completes; any other fails, but
    -- a durable export (kind), which stays live between attempts: the
    -- queue resumes it (see queue_*.lua).
    if f[9] and j.chunks == tonumber(f[10]) and redis.call('LLEN', data) >= 1 + j.chunks then
      redis.call('LTRIM', data, 0, j.chunks) -- the header and the chunks
      redis.call('LPOP', data)
      finish(j, 'completed', {'checksum', f[9]}, fmt(now()))
    elseif j.kind == '' then
      finish(j, 'failed', {'error', 'worker lost', 'code', 'worker_lost'}, fmt(now()))
    end
  end
  return j
end
