-- queue_due.lua hands a recoverer the attempts whose lease is due for a
-- check, and puts each check off by ARGV[4] ms, so that the recoverers of
-- other instances do not check it too.
--
-- KEYS, ARGV[1..2] -> see queue.lua
-- ARGV[3] -> how many at most
-- ARGV[4] -> ms to put their next check off by
--
-- Returns:
-- {id, "<owner hash> <kind> <lease token>", ...}
local t = now()
local ids = redis.call('ZRANGEBYSCORE', active, '-inf', t, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', active, t + tonumber(ARGV[4]), id)
  local i = redis.call('HGET', info, id)
  if i then
    table.insert(out, id)
    table.insert(out, i)
  else
    redis.call('ZREM', active, id)
  end
end
return out
