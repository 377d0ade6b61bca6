-- queue_claim.lua takes the next ready durable export of one of some kinds,
-- from the owner whose turn it is, unless that owner runs MaxPerUser
-- attempts already, and tracks its attempt (active, running, info). The
-- claimer then begins the attempt on the job (begin.lua), or, if the job
-- is gone or held, undoes the claim (queue_settle.lua).
--
-- KEYS, ARGV[1..2] -> see queue.lua
-- KEYS[4..] -> <prefix>{q<n>}:ready:<kind> of each kind, in ARGV's order
-- ARGV[3] -> MaxPerUser (0: no cap)
-- ARGV[4] -> when to check the attempt's lease first, ms from now (its TTL)
-- ARGV[5] -> how long an owner at MaxPerUser waits for its next turn, ms
-- ARGV[6] -> how many exports to take at most
-- ARGV[7] -> the lease tokens the exports' attempts will run under, in
--            order, separated by spaces (ARGV[6] of them)
-- ARGV[8..] -> the kinds
--
-- Returns:
-- {"ok", id, owner hash, kind, queued ms ago, ...}  one to ARGV[6] exports, in the order of the turns
--   (queued: first queued, for an id queued again because its job was
--   missing; else ready)
-- {"none", ms}  nothing ready; the next is ready in ms ("" if none is queued)
local cap, check, park, want = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local tokens = {}
for tok in string.gmatch(ARGV[7], '%S+') do table.insert(tokens, tok) end
local t = now()
local out = {'ok'}
local function done(ms)
  if #out > 1 then return out end
  return {'none', ms}
end
for _ = 1, 16 + 2 * want do
  local best, owner, kind, score
  for i = 4, #KEYS do
    local z = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    if z[1] and (not score or tonumber(z[2]) < score) then
      best, owner, kind, score = KEYS[i], z[1], ARGV[i + 4], tonumber(z[2])
    end
  end
  if not owner then return done('') end
  if score > t then return done(tostring(score - t)) end
  local q = queued(kind, owner)
  local z = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
  if not z[1] then
    redis.call('ZREM', best, owner)
  elseif tonumber(z[2]) > t then
    redis.call('ZADD', best, z[2], owner) -- its next export is not ready yet
  elseif cap > 0 and tonumber(redis.call('HGET', running, owner) or '0') >= cap then
    redis.call('ZADD', best, t + park, owner)
  elseif redis.call('HEXISTS', info, z[1]) == 1 then
    redis.call('ZREM', q, z[1]) -- an attempt of it runs already: a stale entry
    redis.call('HDEL', born, z[1])
  else
    local id = z[1]
    local since = tonumber(redis.call('HGET', born, id) or z[2])
    redis.call('HDEL', born, id)
    redis.call('ZREM', q, id)
    if redis.call('ZCARD', q) == 0 then
      redis.call('ZREM', best, owner)
    else
      redis.call('ZADD', best, t, owner) -- to the back of the line
    end
    redis.call('HINCRBY', running, owner, 1)
    redis.call('ZADD', active, t + check, id)
    redis.call('HSET', info, id, owner .. ' ' .. kind .. ' ' .. tokens[(#out - 1) / 4 + 1])
    keep(running); keep(active); keep(info)
    table.insert(out, id); table.insert(out, owner); table.insert(out, kind)
    table.insert(out, tostring(t - since))
    if (#out - 1) / 4 >= want then return out end
  end
end
return done('0')
