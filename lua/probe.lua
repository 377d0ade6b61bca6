-- probe.lua tells a recoverer what became of a durable export whose
-- attempt is due for a check. It changes nothing.
--
-- KEYS, ARGV[1] -> see common.lua
--
-- Returns:
-- {"held", ms}  its lease is held for ms more
-- {"lapsed"}    it is live and no attempt holds it: queue it again
-- {"gone"}      it ended
-- {"missing"}   it does not exist
local st = redis.call('HGET', meta, 'status')
if not st then return {'missing'} end
if not live(st) then return {'gone'} end
local p = redis.call('PTTL', lease)
if p > 0 then return {'held', tostring(p)} end
return {'lapsed'}
