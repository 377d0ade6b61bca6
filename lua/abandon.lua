-- abandon.lua undoes a creation whose caller was told it failed (its reply
-- came too late, or not at all): it removes the job if that creation was
-- applied and the job is still pending, and marks the id abandoned so that
-- a copy of the creation arriving later records nothing.
--
-- KEYS, ARGV[1] -> see common.lua
-- ARGV[2] -> the creation's lease token (Create), or the enqueuer's token (Enqueue)
-- ARGV[3] -> how long the mark lasts, ms
--
-- Returns:
-- {"ok"}
-- {"kept"}  the job exists and is not that creation's pending job
local mine = redis.call('GET', lease) == ARGV[2] or redis.call('HGET', meta, 'token') == ARGV[2]
if mine and redis.call('HGET', meta, 'status') == 'pending' then
  redis.call('DEL', meta, data, lease)
end
if redis.call('EXISTS', meta) == 1 then return {'kept'} end
redis.call('SET', abandoned, '1', 'PX', ARGV[3])
return {'ok'}
