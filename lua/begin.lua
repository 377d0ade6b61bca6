-- begin.lua begins the next attempt of a durable export that a claim took
-- from its queue: it takes the job's lease (fencing every earlier attempt)
-- and counts the attempt. Attempts lost to a crash count as begun; those
-- handed back by Shutdown do not count toward MaxAttempts.
--
-- KEYS, ARGV[1] -> see common.lua
-- ARGV[2] -> lease token
-- ARGV[3] -> lease TTL, ms
--
-- Returns:
-- {"ok", field, value, ...}  begun: the job hash, with "sha" (the SHA-256 state of
--                            the stored chunks) when chunks are stored
-- {"held", ms}               another attempt holds the lease for ms more
-- {"gone"}                   the job ended (cancelled, say) or is no durable export
-- {"missing"}                the job does not exist (expired, abandoned)
-- {"exhausted", field, value, ...}  every attempt allowed began: the job
--                            failed with the last one's error (or "worker lost")
local j = load()
if not j then return {'missing'} end
if not live(j.status) or j.kind == '' then return {'gone'} end
if j.token then return {'held', tostring(redis.call('PTTL', lease))} end
local f = redis.call('HMGET', meta, 'attempt', 'handed', 'maxatt', 'lasterr', 'lastcode')
local attempt, handed, most = tonumber(f[1]) or 0, tonumber(f[2]) or 0, tonumber(f[3]) or 1
local t = fmt(now())
if attempt - handed >= most then
  if f[4] and f[4] ~= '' then
    finish(j, 'failed', {'error', f[4], 'code', f[5] or 'source'}, t)
  else
    finish(j, 'failed', {'error', 'worker lost', 'code', 'worker_lost'}, t)
  end
  return reply('exhausted')
end
if redis.call('LLEN', data) < 1 + j.chunks then
  finish(j, 'failed', {'error', 'export data corrupt: its stored chunks are gone from Redis (evicted or deleted)',
    'code', 'corrupt'}, t)
  return reply('exhausted')
end
redis.call('SET', lease, ARGV[2], 'PX', ARGV[3])
local set = {'attempt', attempt + 1, 'updated', t}
if j.status == 'pending' then
  table.insert(set, 'status'); table.insert(set, 'running')
  table.insert(set, 'started'); table.insert(set, t)
end
redis.call('HSET', meta, unpack(set))
redis.call('PEXPIRE', meta, j.retention)
redis.call('PEXPIRE', data, j.retention)
return reply('ok')
