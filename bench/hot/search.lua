-- wrk script for bench/hot: POST /search with the query bodies in $BODIES (one JSON per line), in turn.
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do
  table.insert(bodies, line)
end
local i = 0

request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/search", { ["Content-Type"] = "application/json" }, bodies[i])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "errors": %d, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "seconds": %.3f}\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, summary.duration / 1e6))
end
