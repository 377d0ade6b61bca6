-- create.lua records a new pending job, its lease and its data list (the
-- header alone), unless the id exists or its creation was abandoned.
--
-- KEYS, ARGV[1] -> see common.lua
-- ARGV[2]  -> lease token
-- ARGV[3]  -> lease TTL, ms
-- ARGV[4]  -> retention, ms
-- ARGV[5..] -> field, value pairs of the job hash
--
-- Returns:
-- {"ok", created ms}
-- {"exists"}
-- {"abandoned"}  a late copy of a creation whose caller was told it failed
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
