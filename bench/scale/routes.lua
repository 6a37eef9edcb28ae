-- wrk script for bench/scale.sh: every request goes to a random one of the scale run's
-- routes (`/sNNNN/rR/x` for NNNN < UPSTREAMS, R < ROUTES), and after the run one
-- machine-readable line with the request count, errors and p50/p99/p99.9 latency (µs).
-- Usage: wrk ... -s bench/scale/routes.lua URL -- UPSTREAMS ROUTES
-- The request strings are built once per thread; each thread has its own seed.

local threads_started = 0

function setup(thread)
  threads_started = threads_started + 1
  thread:set("seed", threads_started)
end

local requests = {}
local n = 0

function init(args)
  local upstreams = tonumber(args[1]) or 1000
  local routes = tonumber(args[2]) or 10
  math.randomseed(os.time() * 1000 + (seed or 0))
  for s = 0, upstreams - 1 do
    for r = 0, routes - 1 do
      n = n + 1
      requests[n] = wrk.format("GET", string.format("/s%04d/r%d/x", s, r))
    end
  end
end

function request()
  return requests[math.random(n)]
end

done = function(summary, latency, _requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
