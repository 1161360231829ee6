-- wrk script for every closed-loop run: POSTs one fixed body (BENCH_BODY_FILE) with the headers
-- an OpenAI SDK would send, and prints one machine-readable line at the end:
--   BENCH_RESULT {"requests":..,"latency_us":{"p50":..,"p99":..,"p999":..},..}
-- wrk --latency prints up to p99 only; p99.9 comes from the same histogram here.
-- Environment: BENCH_BODY_FILE (required), BENCH_AUTH (a client key, sent as a Bearer token),
-- BENCH_STREAM=1 (adds x-bench-stream: 1 so that the bench upstream answers with its SSE body).
local path = os.getenv("BENCH_BODY_FILE")
local f = assert(io.open(path, "rb"), "cannot open BENCH_BODY_FILE " .. tostring(path))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["User-Agent"] = "OpenAI/Python 1.54.4"
wrk.headers["X-Stainless-Lang"] = "python"
local auth = os.getenv("BENCH_AUTH")
if auth and #auth > 0 then wrk.headers["Authorization"] = "Bearer " .. auth end
if os.getenv("BENCH_STREAM") == "1" then
  wrk.headers["x-bench-stream"] = "1"
  wrk.headers["Accept"] = "text/event-stream"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f,"max":%.1f,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
