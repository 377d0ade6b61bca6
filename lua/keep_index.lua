-- keep_index.lua extends an owner's index's TTL, never shortening it.
--
-- KEYS[1] -> <prefix>owner:{<hash of owner>}:jobs
-- ARGV[1] -> the least TTL it keeps, ms
--
-- Returns 1 if it extended the TTL, else 0.
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then return redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 0
