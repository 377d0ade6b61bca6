-- queue_push.lua queues a durable export (Enqueue), or queues it again
-- (a retry, a hand-back, a lapsed attempt), and announces it to claimers.
--
-- KEYS, ARGV[1..2] -> see queue.lua
-- ARGV[3] -> id
-- ARGV[4] -> owner hash
-- ARGV[5] -> kind
-- ARGV[6] -> delay before it is ready, ms
-- ARGV[7] -> the lease token of its attempt, to stop tracking that attempt
--            first ("*": whichever), or "" for an id that has none
-- ARGV[8] -> the events channel, or "" to announce nothing (a claimer
--            told of an export queued with a delay probes the shard, learns
--            when it is ready, and looks again then)
-- ARGV[9] -> the shard's number, for the announcement
-- ARGV[10] -> how long ago the id was first queued, ms, for one queued again
--             because a claim found no job for it yet (see queue_claim.lua);
--             else absent
--
-- Returns:
-- {"ok"}
-- {"stale"}  the attempt is no longer the tracked one (the recoverer queued
--            the export again already): nothing was changed
if ARGV[7] ~= '' and not forget(ARGV[3], ARGV[7]) then return {'stale'} end
push(ARGV[3], ARGV[4], ARGV[5], now() + tonumber(ARGV[6]))
if ARGV[10] then
  redis.call('HSET', born, ARGV[3], now() - tonumber(ARGV[10]))
  keep(born)
end
if ARGV[8] ~= '' then
  redis.call('PUBLISH', ARGV[8], ARGV[3] .. ' pending ' .. ARGV[5] .. ' ' .. ARGV[9])
end
return {'ok'}
