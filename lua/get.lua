-- get.lua reads a job, ending it first if its lease lapsed.
--
-- KEYS, ARGV[1] -> see common.lua
-- ARGV[2] -> owner ("" for any)
--
-- Returns:
-- {"ok", field, value, ...}
-- {"missing"}  also for another owner's job, which it leaves untouched
local o = redis.call('HGET', meta, 'owner')
if not o or (ARGV[2] ~= '' and o ~= ARGV[2]) then return {'missing'} end
load()
return reply('ok')
