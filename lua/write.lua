-- write.lua is Store.Write. It runs in one MULTI/EXEC with the RPUSHX of
-- the write's chunks (if any), right after it, so that the two are applied
-- together or not at all: a connection that dies half way through sending
-- them, or delivers them late, can leave nothing behind but a whole copy of
-- the pair, which this script recognises.
--
-- KEYS, ARGV[1] -> see common.lua
-- ARGV[2]  -> lease token
-- ARGV[3]  -> lease TTL, ms
-- ARGV[4]  -> "1" to move a pending job to running first, else "0"
-- ARGV[5]  -> index of the write's first chunk
-- ARGV[6]  -> number of chunks the RPUSHX before this script appended
-- ARGV[7]  -> the job's Bytes once they are stored
-- ARGV[8]  -> final status: "", "completed" or "failed"
-- ARGV[9]  -> checksum (completed, or a seal) or error text (failed)
-- ARGV[10] -> number of chunks a completed job holds
-- ARGV[11] -> "seal" (with ARGV[8] "") to record ARGV[9] and ARGV[10] as what
--             completes the job once its lease lapses (see MinReplicas), else "0"
-- ARGV[12] -> error code (failed): Job.ErrorCode
-- ARGV[13] -> the SHA-256 state after this write's chunks (durable exports,
--             for a resume), or ""
-- ARGV[14] -> the bytes read from the source so far (Job.Read): kept if
--             larger than the stored figure; "0" changes nothing
--
-- Returns:
-- {"ok"}
-- {"fenced"}        the lease is not the job's (cancelled, finished, lapsed)
-- {"gap"}           the chunks do not follow the stored ones
-- {"lost", n, c}    the data list holds n chunks of the c stored (evicted,
--                   deleted, lost in a failover)
-- {"retry"}         the list held elements past the stored chunks besides this
--                   write's (a pipeline whose script never ran): they were
--                   removed, and the write must be sent again
-- {"missing"}       the job does not exist
local j = load()
if not j then return {'missing'} end
local st, final, n, c = j.status, ARGV[8], tonumber(ARGV[6]), j.chunks
-- The list holds the header of a live job, then exactly the c chunks this
-- script verified. Whatever lies past them was appended by the RPUSHX of
-- this transaction (n elements), or by one whose script never ran (a
-- NOSCRIPT reply): trim() removes it all.
local base = (st == 'completed') and 0 or 1
local len = redis.call('LLEN', data)
local function trim()
  if len <= base + c then return end
  if base + c == 0 then redis.call('DEL', data) else redis.call('LTRIM', data, 0, base + c - 1) end
end
-- A pending job must begin before it takes bytes, or be failed (Shutdown).
local ok = st == 'running' or (st == 'pending' and (ARGV[4] == '1' or final == 'failed'))
if not ok or j.token ~= ARGV[2] then
  -- Drop this write's chunks. The list of a job whose lease is gone is gone
  -- too; a completed job's list only takes the RPUSHX of a retried final
  -- write; so this touches no one else's chunks.
  trim()
  if final ~= '' and st == final then
    local field = (final == 'completed') and 'checksum' or 'error'
    if j[field] == ARGV[9] then return {'ok'} end
  end
  return {'fenced'}
end
local t = fmt(now())
if final == 'failed' then
  finish(j, 'failed', {'error', ARGV[9], 'code', ARGV[12]}, t)
  return {'ok'}
end
-- First a write that cannot grow memory (see finish): above maxmemory
-- Redis refuses the RPUSHX of new bytes, but records a completion.
redis.call('PEXPIRE', meta, j.retention)
if len < base + c then
  return {'lost', math.max(len - base, 0), c}
end
local idx, extra = tonumber(ARGV[5]), len - base - c
local set = {'updated', t}
if n > 0 then
  if idx + n <= c then
    trim() -- stored already: a repeated write
  elseif idx ~= c then
    trim()
    return {'gap'}
  elseif extra ~= n then
    trim()
    return {'retry'}
  else
    c = c + n -- exactly this write's chunks follow the stored ones: keep them
    table.insert(set, 'chunks'); table.insert(set, c)
    if ARGV[13] ~= '' then
      table.insert(set, 'sha'); table.insert(set, ARGV[13])
    end
  end
elseif extra > 0 then
  trim()
end
if tonumber(j.bytes) < tonumber(ARGV[7]) then
  table.insert(set, 'bytes'); table.insert(set, ARGV[7])
end
local read = tonumber(ARGV[14]) or 0
if read > 0 and read > (tonumber(redis.call('HGET', meta, 'read')) or 0) then
  table.insert(set, 'read'); table.insert(set, ARGV[14])
end
if st == 'pending' and ARGV[4] == '1' then
  table.insert(set, 'status'); table.insert(set, 'running')
  table.insert(set, 'started'); table.insert(set, t)
end
redis.call('HSET', meta, unpack(set))
if final == 'completed' then
  if c ~= tonumber(ARGV[10]) then return {'gap'} end
  redis.call('LPOP', data)
  finish(j, 'completed', {'checksum', ARGV[9]}, t)
  return {'ok'}
end
hold(j, ARGV[3])
if ARGV[11] == 'seal' then
  -- Every chunk is stored: record what completes the job, so that any
  -- server with these writes can complete it, and keep the data for the
  -- retention, past the lease.
  if c ~= tonumber(ARGV[10]) then return {'gap'} end
  redis.call('HSET', meta, 'seal', ARGV[9], 'sealcount', ARGV[10])
  redis.call('PEXPIRE', data, j.retention)
end
-- Progress is announced only while someone watches the job.
if redis.call('EXISTS', watch) == 1 then
  redis.call('PUBLISH', events, j.id .. ' running')
end
return {'ok'}
