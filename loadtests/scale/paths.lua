-- wrk script: GET a path picked at random from a file, per request.
--   wrk ... -s paths.lua URL -- PATHS_FILE EXPECTED_STATUS
-- PATHS_FILE has one request path a line ("/AbC123x", "/urls?page=2").
-- SCALE_API_KEY in the environment, when set, is sent as a bearer token.
-- At the end prints one line for loadtests/scale/run.sh:
--   RESULT rps=… p50_ms=… p90_ms=… p99_ms=… max_ms=… requests=… expected=…
--          unexpected=…
--          statuses=2xx:…,3xx:…,4xx:…,5xx:… cache_hit=… cache_miss=… socket_errors=…
-- (cache_hit / cache_miss: the service's X-Cache answer header).

local paths = {}
local n = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file, want = args[1], tonumber(args[2])
  if not file or not want then
    error("usage: wrk ... -s paths.lua URL -- PATHS_FILE EXPECTED_STATUS")
  end
  for line in io.lines(file) do
    local path = line:match("^%s*(%S+)%s*$")
    if path then
      n = n + 1
      paths[n] = path
    end
  end
  if n == 0 then
    error("no paths in " .. file)
  end
  expected_status = want
  expected, unexpected, cache_hit, cache_miss = 0, 0, 0, 0
  c2, c3, c4, c5 = 0, 0, 0, 0
  local key = os.getenv("SCALE_API_KEY")
  if key and key ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. key
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

function request()
  return wrk.format("GET", paths[math.random(n)])
end

function response(status, headers, body)
  if status == expected_status then
    expected = expected + 1
  else
    unexpected = unexpected + 1
  end
  local class = math.floor(status / 100)
  if class == 2 then c2 = c2 + 1
  elseif class == 3 then c3 = c3 + 1
  elseif class == 4 then c4 = c4 + 1
  else c5 = c5 + 1 end
  local xc = headers["x-cache"] or headers["X-Cache"]
  if xc == "HIT" then
    cache_hit = cache_hit + 1
  elseif xc == "MISS" then
    cache_miss = cache_miss + 1
  end
end

function done(summary, latency, requests)
  -- thread:get() hands over numbers and strings, so the counters are numbers.
  local sum = { expected = 0, unexpected = 0, cache_hit = 0, cache_miss = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0 }
  for _, t in ipairs(threads) do
    for k, _ in pairs(sum) do
      sum[k] = sum[k] + (t:get(k) or 0)
    end
  end
  local err = summary.errors
  local socket_errors = err.connect + err.read + err.write + err.timeout
  local secs = summary.duration / 1e6
  io.write(string.format(
    "RESULT rps=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f requests=%d expected=%d unexpected=%d " ..
    "statuses=2xx:%d,3xx:%d,4xx:%d,5xx:%d cache_hit=%d cache_miss=%d socket_errors=%d\n",
    summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, sum.expected, sum.unexpected, sum.c2, sum.c3, sum.c4, sum.c5,
    sum.cache_hit, sum.cache_miss, socket_errors))
end
