-- enqueue.lua records a new durable export, pending and with no lease
-- (it has no attempt yet), and its data list (the header alone), unless
-- the id exists or its creation was abandoned. Its data is kept for its
-- retention: attempts come and go, the chunks stay.
--
-- KEYS, ARGV[1] -> see common.lua
-- ARGV[2]  -> the enqueuer's token (see abandon.lua)
-- ARGV[3]  -> retention, ms
-- ARGV[4]  -> MaxAttempts
-- ARGV[5..] -> field, value pairs of the job hash
--
-- Returns:
-- {"ok", created ms}
-- {"exists"}
-- {"abandoned"}  a late copy of an enqueue whose caller was told it failed
if redis.call('EXISTS', meta) == 1 then return {'exists'} end
if redis.call('EXISTS', abandoned) == 1 then return {'abandoned'} end
local t = fmt(now())
redis.call('HSET', meta, 'created', t, 'updated', t, 'started', '0', 'finished', '0',
  'checksum', '', 'error', '', 'chunks', '0', 'token', ARGV[2], 'maxatt', ARGV[4], unpack(ARGV, 5))
redis.call('PEXPIRE', meta, ARGV[3])
redis.call('RPUSH', data, '')
redis.call('PEXPIRE', data, ARGV[3])
return {'ok', t}
