-- wrk script: durable appends spread over the runs listed in runs.lua.
-- Each request appends a ~200-byte payload to a run picked round-robin per
-- connection, without idempotency keys or expected seqs (pure append path).
local runs = dofile((os.getenv("BENCH_RUNS_FILE") or "runs.lua"))
local counter = 0
local pad = string.rep("x", 160)

request = function()
  counter = counter + 1
  local run = runs[(counter % #runs) + 1]
  local body = '{"event_type":"bench.note","payload":{"n":' .. counter .. ',"pad":"' .. pad .. '"}}'
  return wrk.format("POST", "/internal/v1/runs/" .. run .. "/events",
    {["Content-Type"] = "application/json"}, body)
end

done = function(summary, latency, requests)
  io.write(string.format("non-2xx/3xx: %d\n", summary.errors.status))
  io.write(string.format("p50 %.2fms p99 %.2fms\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
