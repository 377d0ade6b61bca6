-- cancel.lua cancels a pending or running job.
--
-- KEYS, ARGV[1] -> see common.lua
-- ARGV[2] -> owner ("" for any)
-- ARGV[3] -> reason (Job.Error); the code is "cancelled"
--
-- Returns:
-- {"ok", field, value, ...}        cancelled now or before
-- {"finished", field, value, ...}  completed or failed: unchanged
-- {"missing"}                      also for another owner's job, left untouched
local o = redis.call('HGET', meta, 'owner')
if not o or (ARGV[2] ~= '' and o ~= ARGV[2]) then return {'missing'} end
local j = load()
if j.status == 'cancelled' then return reply('ok') end
if not live(j.status) then return reply('finished') end
finish(j, 'cancelled', {'error', ARGV[3], 'code', 'cancelled'}, fmt(now()))
return reply('ok')
