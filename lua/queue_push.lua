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
-- ARGV[8] -> the events channel, or "" to announce nothing
-- ARGV[9] -> the shard's number, for the announcement
--
-- Returns:
-- {"ok"}
-- {"stale"}  the attempt is no longer the tracked one (the recoverer queued
--            the export again already): nothing was changed
if ARGV[7] ~= '' and not forget(ARGV[3], ARGV[7]) then return {'stale'} end
push(ARGV[3], ARGV[4], ARGV[5], now() + tonumber(ARGV[6]))
if ARGV[8] ~= '' and tonumber(ARGV[6]) == 0 then
  redis.call('PUBLISH', ARGV[8], ARGV[3] .. ' pending ' .. ARGV[5] .. ' ' .. ARGV[9])
end
return {'ok'}
