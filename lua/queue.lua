-- queue.lua is prepended to every script of a queue shard (queue_*.lua).
--
-- The durable exports wait in queue shards: an owner's exports are all in
-- the shard its hash picks, in keys that share the hash tag {q<n>}, so that
-- a claim, its owner's count and the attempts it tracks change in one step
-- on one Cluster slot:
--
-- KEYS[1] -> <prefix>{q<n>}:active   zset: id -> when to check the lease of its attempt, ms
-- KEYS[2] -> <prefix>{q<n>}:running  hash: owner hash -> attempts running (MaxPerUser)
-- KEYS[3] -> <prefix>{q<n>}:info     hash: id -> "<owner hash> <kind> <lease token>" of the ids in active
-- ARGV[1] -> <prefix>{q<n>}:, the tag of the keys the scripts name themselves:
--              <tag>ready:<kind>              zset: owner hash -> when its turn comes, ms
--              <tag>jobs:<kind>:<owner hash>  zset: id -> when it is ready, ms
--              <tag>born                      hash: id -> when it was first queued, ms,
--                                             of the ids a claim found with no job yet
--            They share the tag, so they live in the slot of KEYS.
-- ARGV[2] -> the TTL of the shard's keys, ms: extended by every write, never
--            shortened (twice the longest retention that wrote them)
--
-- Turns: an owner's score in ready is when its turn comes. A claim serves
-- the owner with the lowest score and moves it to the back (the claim's
-- time), so owners with work take turns, however much each has queued.
local active, running, info, tag, ttl = KEYS[1], KEYS[2], KEYS[3], ARGV[1], tonumber(ARGV[2])
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function keep(k)
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
end
local function ready(kind) return tag .. 'ready:' .. kind end
local function queued(kind, owner) return tag .. 'jobs:' .. kind .. ':' .. owner end
local born = tag .. 'born'
-- push(id, owner, kind, at) queues id, ready at ms at, and gives its owner
-- a turn no later than at.
local function push(id, owner, kind, at)
  local q, r = queued(kind, owner), ready(kind)
  redis.call('ZADD', q, at, id)
  keep(q)
  local s = redis.call('ZSCORE', r, owner)
  if not s or tonumber(s) > at then redis.call('ZADD', r, at, owner) end
  keep(r)
end
-- forget(id, token) stops tracking the attempt of id that runs under the
-- lease token ("*": whichever attempt), counts it off its owner, and
-- reports whether it did. The token keeps a late step of one attempt (its
-- release, after the recoverer found its lease gone and another attempt
-- was claimed) from forgetting the next. An owner parked at MaxPerUser
-- gets its turn back at once.
local function forget(id, token)
  local i = redis.call('HGET', info, id)
  if not i then
    redis.call('ZREM', active, id)
    return false
  end
  local owner, kind, held = string.match(i, '^(%S+) (%S+) (%S*)$')
  if token ~= '*' and held ~= token then return false end
  redis.call('ZREM', active, id)
  redis.call('HDEL', info, id)
  if redis.call('HINCRBY', running, owner, -1) <= 0 then redis.call('HDEL', running, owner) end
  local r, t = ready(kind), now()
  local s = redis.call('ZSCORE', r, owner)
  if s and tonumber(s) > t then redis.call('ZADD', r, t, owner) end
  return true
end
