-- bench/handler.lua: the handler scripts/bench.sh runs in luahook.
-- The same work as the other receivers the project compares itself with: a per-hub
-- count of online connections and a connectionId -> userId map. The tables live in
-- `state` so they survive a reload (a later benchmark row measures reloads).

local online = state.online or {}
local users = state.users or {}
state.online, state.users = online, users

function on_connected(ev)
  local d = ev.data
  online[d.hubName] = (online[d.hubName] or 0) + 1
  users[d.connectionId] = d.userId
end

function on_disconnected(ev)
  local d = ev.data
  online[d.hubName] = (online[d.hubName] or 0) - 1
  users[d.connectionId] = nil
end
