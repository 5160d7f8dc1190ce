-- presence.lua: live presence for a serverless Azure SignalR chat, fed by Event Grid.
--
-- The official "EventGridIntegration" sample (an Azure Function) done in Lua, and done
-- so that it stays right under Event Grid's at-least-once, unordered delivery:
--   * a connected event for a connection it has not seen: sends target "newMessage"
--     {text = "Welcome to Serverless Chat", sender = "__SYSTEM__"} to that connection,
--     then broadcasts target "connectionCount" with the hub's online count;
--   * a repeated connected event sends nothing;
--   * a disconnected event: forgets the connection and broadcasts the new count; when
--     the user has no connection left, waits PRESENCE_GRACE_MS and, unless the user came
--     back meanwhile, broadcasts target "userOffline" with the user id.
-- The count is the number of connection ids known in `state` (never +1/-1 on a stored
-- number), so a duplicate cannot skew it, and a disconnected event that arrives before
-- its connected event leaves a tombstone (with data.timestamp) so that the late connect
-- does not bring back a ghost.
-- A failed REST call fails the event (HTTP 500), so Event Grid delivers it again; the
-- retry does only what is left to do (no second welcome).
--
-- Environment:
--   AzureSignalRConnectionString  Endpoint=https://<name>.service.signalr.net;AccessKey=...;Version=1.0;
--                                 (the setting the Azure Functions SignalR binding reads)
--   PRESENCE_GRACE_MS             grace period before "userOffline" (default 5000)
--   PRESENCE_TOMBSTONES           disconnects remembered per hub (default 10000)
--
-- Run:  AzureSignalRConnectionString='Endpoint=...' luahook run examples/presence.lua
--       luahook replay examples/presence.lua examples/events/connected.json

local signalr = require "luahook.signalr"

local client = assert(signalr.new(os.getenv("AzureSignalRConnectionString"), { timeout_ms = 5000 }))

local function env_int(name, default, min)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  local n = math.tointeger(tonumber(v))
  assert(n and n >= min, name .. " must be a whole number >= " .. min .. ", not " .. v)
  return n
end

local GRACE_MS = env_int("PRESENCE_GRACE_MS", 5000, 0)
local MAX_TOMBSTONES = env_int("PRESENCE_TOMBSTONES", 10000, 1)
local BUSY_MS = 15000        -- how long a delivery in progress may hold a connection / the count
local OFFLINE_TRIES = 3

local WELCOME = { text = "Welcome to Serverless Chat", sender = "__SYSTEM__" }

-- ------------------------------------------------------------------ time stamps

local function days_from_civil(y, m, d) -- proleptic Gregorian date -> days since 1970-01-01
  if m <= 2 then y = y - 1 end
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m > 2 and m - 3 or m + 9) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

--- "2019-06-10T18:41:00.9584103Z" (RFC 3339) -> integer nanoseconds since the epoch, or nil.
local function parse_time(s)
  if type(s) ~= "string" then return nil end
  local Y, Mo, D, h, mi, sec, frac, zone =
    s:match("^(%d%d%d%d)-(%d%d)-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not Y then return nil end
  local ns = 0
  if frac ~= "" then
    if #frac == 1 then return nil end
    ns = math.tointeger(tonumber((frac:sub(2) .. "000000000"):sub(1, 9)))
  end
  local off = 0
  if zone ~= "Z" and zone ~= "z" and zone ~= "" then
    local sign, zh, zm = zone:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then return nil end
    off = (tonumber(zh) * 60 + tonumber(zm)) * 60
    if sign == "-" then off = -off end
  end
  local t = days_from_civil(tonumber(Y), tonumber(Mo), tonumber(D)) * 86400
            + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec) - off
  return t * 1000000000 + ns
end

-- ------------------------------------------------------------------ state

-- state.presence[hub] = {
--   name, conns = {id -> {user, ts, welcomed, counted, busy}}, count,
--   users = {user -> {id -> true}}, nusers = {user -> n},
--   gone = {id -> tombstone}, gone_q = {first, last, [i] = {id, tombstone}}, ngone,
--   ver, sent_ver, inflight          (count broadcasts: see publish_count)
--   offline = {user -> {handle}}     (grace timers)
-- }
state.presence = state.presence or {}

local function hub_state(ev)
  local d = ev.data
  local name = d.hubName
  if type(name) ~= "string" or name == "" then
    name = type(ev.subject) == "string" and ev.subject:match("^/hub/(.+)$") or nil
  end
  if not name then luahook.reject("SignalR event without data.hubName") end
  local key = name:lower()
  local h = state.presence[key]
  if not h then
    h = { name = name, conns = {}, count = 0, users = {}, nusers = {}, gone = {},
          gone_q = { first = 1, last = 0 }, ngone = 0, ver = 0, sent_ver = 0, offline = {} }
    state.presence[key] = h
  end
  return h
end

local function event_fields(ev)
  local d = ev.data
  if type(d) ~= "table" then luahook.reject("SignalR event without a data object") end
  local id = d.connectionId
  if type(id) ~= "string" or id == "" then luahook.reject("SignalR event without data.connectionId") end
  local user = type(d.userId) == "string" and d.userId or ""
  return hub_state(ev), id, user, parse_time(d.timestamp) or parse_time(ev.time)
end

local function user_online(h, user)
  return user ~= "" and (h.nusers[user] or 0) > 0
end

local function add_conn(h, id, c)
  h.conns[id] = c
  h.count = h.count + 1
  h.ver = h.ver + 1
  local u = c.user
  if u ~= "" then
    local set = h.users[u]
    if not set then set = {}; h.users[u] = set end
    set[id] = true
    h.nusers[u] = (h.nusers[u] or 0) + 1
  end
end

local function remove_conn(h, id)
  local c = h.conns[id]
  h.conns[id] = nil
  h.count = h.count - 1
  h.ver = h.ver + 1
  local u = c.user
  if u ~= "" and h.users[u] and h.users[u][id] then
    h.users[u][id] = nil
    h.nusers[u] = h.nusers[u] - 1
    if h.nusers[u] == 0 then h.users[u] = nil; h.nusers[u] = nil end
  end
  return c
end

-- Remembers a disconnect (bounded: the oldest are forgotten first).
local function add_tombstone(h, id, ts, user, settled)
  local old = h.gone[id]
  if old then h.ngone = h.ngone - 1 end
  local t = { ts = ts, user = user, counted = settled, offline_done = settled }
  h.gone[id] = t
  h.ngone = h.ngone + 1
  local q = h.gone_q
  q.last = q.last + 1
  q[q.last] = { id, t }
  while h.ngone > MAX_TOMBSTONES and q.first <= q.last do
    local e = q[q.first]
    q[q.first] = nil
    q.first = q.first + 1
    if h.gone[e[1]] == e[2] then h.gone[e[1]] = nil; h.ngone = h.ngone - 1 end
  end
  return t
end

local function drop_tombstone(h, id)
  if h.gone[id] then h.gone[id] = nil; h.ngone = h.ngone - 1 end
end

local function now_ms() return timer.now() end

-- ------------------------------------------------------------------ count broadcasts

-- Broadcasts the hub's current count unless a broadcast made since our change already
-- carried it. Broadcasts of one hub go one at a time (others wait and share the result),
-- so the clients' last "connectionCount" is the latest count, whatever the interleaving.
local function publish_count(h)
  local mine = h.ver
  while h.sent_ver < mine do
    if h.inflight and h.inflight > now_ms() then
      timer.sleep(5)
    else
      h.inflight = now_ms() + BUSY_MS
      local ver, n = h.ver, h.count
      local ok, err = client:broadcast(h.name, "connectionCount", { n })
      h.inflight = nil
      if not ok then return nil, err end
      if ver > h.sent_ver then h.sent_ver = ver end
    end
  end
  return true
end

-- ------------------------------------------------------------------ offline grace

local function cancel_offline(h, user)
  local p = h.offline[user]
  if p then
    p.handle:cancel()
    h.offline[user] = nil
  end
end

local function start_offline(h, user)
  cancel_offline(h, user)
  local mine = {}
  h.offline[user] = mine
  mine.handle = timer.after(GRACE_MS, function()
    if h.offline[user] ~= mine then return end -- replaced or cancelled
    h.offline[user] = nil
    for try = 1, OFFLINE_TRIES do
      if user_online(h, user) then return end -- came back
      local ok, err = client:broadcast(h.name, "userOffline", { user })
      if ok then
        log.info("user offline", h.name, user)
        return
      end
      log.warn("userOffline broadcast failed", h.name, user, err)
      if try < OFFLINE_TRIES then timer.sleep(250 * (1 << (try - 1))) end
    end
    log.error("userOffline not delivered", h.name, user)
  end)
end

-- ------------------------------------------------------------------ hooks

function on_connected(ev)
  local h, id, user, ts = event_fields(ev)
  local t = h.gone[id]
  if t then
    if t.ts and ts and ts > t.ts then
      drop_tombstone(h, id) -- a new connection under an id that was closed before
    else
      log.info("connected event after its disconnect: ignored", h.name, id)
      return
    end
  end
  local c = h.conns[id]
  if not c then
    c = { user = user, ts = ts }
    add_conn(h, id, c)
    if user ~= "" then cancel_offline(h, user) end
  elseif c.welcomed and c.counted then
    return -- a repeated delivery: done already
  end
  if c.busy and c.busy > now_ms() then return end -- another delivery is on it
  c.busy = now_ms() + BUSY_MS
  if not c.welcomed then
    local ok, err = client:send_to_connection(h.name, id, "newMessage", { WELCOME })
    if not ok then
      c.busy = nil
      error("welcome to " .. id .. " failed: " .. err, 0)
    end
    c.welcomed = true
  end
  local ok, err = publish_count(h)
  c.busy = nil
  if not ok then error("connectionCount broadcast failed: " .. err, 0) end
  c.counted = true
end

function on_disconnected(ev)
  local h, id, user, ts = event_fields(ev)
  local c = h.conns[id]
  local t = h.gone[id]
  if c then
    if c.ts and ts and ts < c.ts then
      log.info("disconnected event older than its connection: ignored", h.name, id)
      return
    end
    remove_conn(h, id)
    if c.user ~= "" then user = c.user end
    t = add_tombstone(h, id, ts, user, false)
  elseif not t then
    -- before its connected event: nothing is online to take away, but remember it
    add_tombstone(h, id, ts, user, true)
    log.info("disconnected event before its connect", h.name, id)
    return
  elseif ts and (not t.ts or ts > t.ts) then
    t.ts = ts
  end
  if t.counted and t.offline_done then return end -- a repeated delivery
  if t.busy and t.busy > now_ms() then return end
  t.busy = now_ms() + BUSY_MS
  if not t.counted then
    local ok, err = publish_count(h)
    if not ok then
      t.busy = nil
      error("connectionCount broadcast failed: " .. err, 0)
    end
    t.counted = true
  end
  if not t.offline_done then
    if t.user ~= "" and not user_online(h, t.user) then start_offline(h, t.user) end
    t.offline_done = true
  end
  t.busy = nil
end
