-- instances.lua returns the instances' reports that have not lapsed, by
-- this server's clock, and removes those that have (a killed instance's)
-- and any it cannot read.
--
-- KEYS[1] -> <prefix>instances  hash: instance id -> "<lapses, ms> <report as JSON>"
--
-- Returns {id, report, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #h, 2 do
  local lapses, report = string.match(h[i + 1], '^(%d+) (.*)$')
  if lapses and tonumber(lapses) >= now then
    table.insert(out, h[i]); table.insert(out, report)
  else
    redis.call('HDEL', KEYS[1], h[i])
  end
end
return out
