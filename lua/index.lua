-- index.lua adds a job to its owner's index and extends the index's TTL,
-- never shortening it.
--
-- KEYS[1] -> <prefix>owner:{<hash of owner>}:jobs
-- ARGV[1] -> the job's id
-- ARGV[2] -> the least TTL the index keeps, ms
-- ARGV[3] -> the age, ms, past which an entry's job may be gone
-- ARGV[4] -> the most ids returned
--
-- Returns the ids of the oldest entries past that age, up to ARGV[4].
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now - tonumber(ARGV[3])), 'LIMIT', 0, ARGV[4])
