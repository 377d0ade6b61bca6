-- instance_report.lua records an instance's report (InstanceBoard) with
-- when it lapses by this server's clock, so that instances whose clocks
-- disagree never take each other's reports for lapsed.
--
-- KEYS[1] -> <prefix>instances  hash: instance id -> "<lapses, ms> <report as JSON>"
-- ARGV[1] -> the instance's id
-- ARGV[2] -> its report, JSON
-- ARGV[3] -> how long the report lasts unless replaced, ms; the hash's TTL
--            is extended to it, never shortened
--
-- Returns 1.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now + ttl) .. ' ' .. ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
