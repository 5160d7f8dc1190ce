-- bench/wrk-post.lua: wrk script for scripts/bench.sh.
-- POSTs the file named by $BODY with the headers Event Grid sends, and prints one
-- "BENCH key=value ..." line at the end (latencies in microseconds).
--   BODY=bench/body1.json wrk -t1 -c50 -d10s --latency -s bench/wrk-post.lua http://127.0.0.1:18180/api/events
-- There is deliberately no request() function: wrk then builds the request once and
-- resends the same bytes, so the client spends no Lua time per request.

local file = assert(os.getenv("BODY"), "set BODY to the request body file")
local fh = assert(io.open(file, "rb"))
wrk.body = fh:read("*a")
fh:close()

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["aeg-event-type"] = "Notification"
wrk.headers["aeg-subscription-name"] = "LUAHOOK-BENCH"
wrk.headers["aeg-delivery-count"] = "0"
wrk.headers["aeg-data-version"] = "1.0"
wrk.headers["aeg-metadata-version"] = "1"

function done(summary, latency, requests)
  local e = summary.errors
  print(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_timeout=%d non2xx=%d",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    e.connect, e.read, e.write, e.timeout, e.status))
end
