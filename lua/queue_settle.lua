-- queue_settle.lua tells a shard what became of an attempt it tracks.
--
-- KEYS, ARGV[1..2] -> see queue.lua
-- ARGV[3] -> id
-- ARGV[4] -> "forget": the attempt ended, or never began (the job is gone
--            or ended): stop tracking it;
--            "check": its lease is held, for ARGV[5] ms more: check it then
-- ARGV[5] -> ms (with "check")
-- ARGV[6] -> the attempt's lease token ("*": whichever attempt is tracked);
--            another attempt's tracking is left as it is
--
-- Returns:
-- {"ok"}
if ARGV[4] == 'forget' then
  forget(ARGV[3], ARGV[6])
else
  local i = redis.call('HGET', info, ARGV[3])
  if i and (ARGV[6] == '*' or string.match(i, '(%S*)$') == ARGV[6]) then
    redis.call('ZADD', active, now() + tonumber(ARGV[5]), ARGV[3])
  end
end
return {'ok'}
