-- release.lua ends an attempt of a durable export without ending the
-- export: it gives up the lease, so that the queue hands the export to
-- another attempt (queue_push.lua), which resumes from the stored chunks.
--
-- KEYS, ARGV[1] -> see common.lua
-- ARGV[2] -> lease token
-- ARGV[3] -> "retry": the attempt failed (ARGV[4], ARGV[5] are its error text
--            and code, which a last attempt's failure reports); "handback":
--            Shutdown hands it back, and it does not count toward MaxAttempts
-- ARGV[4] -> error text
-- ARGV[5] -> error code
--
-- Returns:
-- {"ok"}
-- {"fenced"}   the lease is not the job's
-- {"missing"}
local j = load()
if not j then return {'missing'} end
if j.token ~= ARGV[2] or not live(j.status) then return {'fenced'} end
redis.call('DEL', lease)
local set = {'updated', fmt(now())}
if ARGV[3] == 'handback' then
  redis.call('HINCRBY', meta, 'handed', 1)
else
  table.insert(set, 'lasterr'); table.insert(set, ARGV[4])
  table.insert(set, 'lastcode'); table.insert(set, ARGV[5])
end
redis.call('HSET', meta, unpack(set))
return {'ok'}
