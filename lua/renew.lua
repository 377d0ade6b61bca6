-- renew.lua extends a lease, the job's retention and its data's TTL. It is
-- the one script an instance runs for every job it holds, every
-- LeaseTTL/3, so it does the least it can: a lease key holding the token
-- means the job is live (every ending deletes the lease).
--
-- KEYS[1] -> <prefix>{<id>}:meta
-- KEYS[2] -> <prefix>{<id>}:data
-- KEYS[3] -> <prefix>{<id>}:lease
-- ARGV[1] -> unused (the events channel of the other scripts)
-- ARGV[2] -> lease token
-- ARGV[3] -> lease TTL, ms
--
-- Returns:
-- {"ok"}
-- {"fenced"}   the lease is gone or another's
-- {"missing"}  the job is gone
local meta, data, lease = KEYS[1], KEYS[2], KEYS[3]
if redis.call('GET', lease) ~= ARGV[2] then
  if redis.call('EXISTS', meta) == 0 then return {'missing'} end
  return {'fenced'}
end
-- First a write that cannot grow memory: Redis then lets the rest through
-- above maxmemory (see finish in common.lua), and a live job keeps its lease.
redis.call('PEXPIRE', lease, ARGV[3])
local f = redis.call('HMGET', meta, 'retention', 'seal', 'kind')
-- A sealed job's data is kept for its retention already (see MinReplicas);
-- a durable export's data is kept for its retention, past a lapse.
if f[3] then
  redis.call('PEXPIRE', data, f[1])
elseif not f[2] then
  redis.call('PEXPIRE', data, ARGV[3])
end
local t = redis.call('TIME')
redis.call('HSET', meta, 'updated', string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
redis.call('PEXPIRE', meta, f[1])
return {'ok'}
