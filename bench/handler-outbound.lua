-- The benchmark handler (bench/handler.lua) plus one outbound HTTP POST per event
-- to a local sink (SINK_URL, nginx's `return 200;` in scripts/bench.sh): what the
-- outbound-call rows measure.
local SINK = assert(os.getenv("SINK_URL"), "SINK_URL must be set")
local online, users = {}, {}

local function notify(ev)
  local res, err = http.post(SINK, ev.raw, { headers = { ["content-type"] = "application/json" } })
  if not res then error("sink: " .. err) end
  if res.status ~= 200 then error("sink answered " .. res.status) end
end

function on_connected(ev)
  local d = ev.data
  online[d.hubName] = (online[d.hubName] or 0) + 1
  users[d.connectionId] = d.userId
  notify(ev)
end

function on_disconnected(ev)
  local d = ev.data
  online[d.hubName] = (online[d.hubName] or 0) - 1
  users[d.connectionId] = nil
  notify(ev)
end
