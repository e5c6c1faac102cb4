-- wrk script for benchmarks/gateway.py: one random 1 MiB Range request per call.
--   SIZE=<file bytes> SEED=<int> [CHECK=1] wrk -s benchmarks/random_range.lua ...
-- Every range lies inside the file. When done it prints "requests: N" and
-- "bytes: N" (all bytes read, headers and unfinished responses included).
-- With CHECK=1 it also counts responses that are not 206 with a 1 MiB body and
-- prints "not_206: N" and "wrong_length: N". That check is off for timed runs:
-- defining response() makes wrk buffer every body and copy it into Lua, which
-- on a 2-core machine halves the rate the client can take from nginx.

local span = 1048576
local size = tonumber(os.getenv("SIZE") or "")
local seed = tonumber(os.getenv("SEED") or "1")
local check = os.getenv("CHECK") == "1"
if size == nil or size < span then
  error("set SIZE to the file size in bytes (at least 1 MiB)")
end

local threads = {}
not_206 = 0
wrong_length = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

function init(args)
  math.randomseed(seed * 1000 + thread_id)
end

function request()
  local a = math.random(0, size - span)
  return wrk.format("GET", nil, { Range = "bytes=" .. a .. "-" .. (a + span - 1) })
end

if check then
  function response(status, headers, body)
    if status ~= 206 then
      not_206 = not_206 + 1
    elseif #body ~= span then
      wrong_length = wrong_length + 1
    end
  end
end

function done(summary, latency, requests)
  io.write(string.format("requests: %d\nbytes: %d\n", summary.requests, summary.bytes))
  if check then
    local bad, short = 0, 0
    for _, thread in ipairs(threads) do
      bad = bad + thread:get("not_206")
      short = short + thread:get("wrong_length")
    end
    io.write(string.format("not_206: %d\nwrong_length: %d\n", bad, short))
  end
end
