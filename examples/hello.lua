-- hello.lua: logs every event luahook receives.
-- Run it:  scripts/run.sh            (or: luahook run examples/hello.lua)

function on_connected(ev)     -- Microsoft.SignalRService.ClientConnectionConnected
  log.info("online", ev.data.hubName, ev.data.userId, ev.data.connectionId)
end

function on_disconnected(ev)  -- Microsoft.SignalRService.ClientConnectionDisconnected
  log.info("offline", ev.data.hubName, ev.data.connectionId, ev.data.errorMessage)
end

function on_event(ev)         -- any other event type
  log.info("event", ev.type, ev.subject, ev.id)
end
