-- notify.lua: tells a chat channel about SignalR connections that closed with an error.
--
-- For every ClientConnectionDisconnected event that carries data.errorMessage, posts
-- {"text": "..."} to an incoming-webhook URL (Slack, Microsoft Teams, Mattermost,
-- Rocket.Chat and Discord's /slack endpoint all take that shape). A failed post is tried
-- again with exponential backoff (timer.sleep suspends only this handler); only when
-- every try failed does the event fail (HTTP 500), so Event Grid delivers it again later.
-- Disconnects without an errorMessage (the client closed cleanly) post nothing.
--
-- Environment:
--   NOTIFY_WEBHOOK_URL   the incoming-webhook URL (required)
--   NOTIFY_TRIES         attempts per event (default 3)
--   NOTIFY_BACKOFF_MS    wait before the 2nd try, doubled for each next one (default 500)
--   NOTIFY_TIMEOUT_MS    per attempt (default 5000)
-- Keep NOTIFY_TRIES * NOTIFY_TIMEOUT_MS + the backoff below the handler timeout (25 s by
-- default) and Event Grid's 30 s response window.
--
-- Run:  NOTIFY_WEBHOOK_URL=https://hooks.slack.com/services/... luahook run examples/notify.lua

local URL = os.getenv("NOTIFY_WEBHOOK_URL")
assert(URL and URL:match("^https?://"), "NOTIFY_WEBHOOK_URL must be set to an http(s) URL")

local function env_int(name, default, min)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  local n = math.tointeger(tonumber(v))
  assert(n and n >= min, name .. " must be a whole number >= " .. min .. ", not " .. v)
  return n
end

local TRIES = env_int("NOTIFY_TRIES", 3, 1)
local BACKOFF_MS = env_int("NOTIFY_BACKOFF_MS", 500, 0)
local TIMEOUT_MS = env_int("NOTIFY_TIMEOUT_MS", 5000, 1)

-- Chat markup would turn <, > and & into links or mentions: escape them (Slack's rule).
local function esc(s)
  return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"))
end

local function message(ev)
  local d = ev.data
  local user = (type(d.userId) == "string" and d.userId ~= "") and d.userId or "(anonymous)"
  return string.format("SignalR connection %s of user %s on hub %s closed with an error: %s (at %s, %s)",
    esc(d.connectionId or "?"), esc(user), esc(d.hubName or "?"), esc(d.errorMessage),
    esc(d.timestamp or ev.time or "?"), esc(ev.source or "?"))
end

-- A try worth repeating: transport errors, 408, 429 and 5xx. Other answers (400, 403,
-- 404: a wrong URL or payload) will not get better by trying again right now.
local function retryable(res)
  return res == nil or res.status == 408 or res.status == 429 or res.status >= 500
end

local function post(text)
  local last
  for try = 1, TRIES do
    local res, err = http.post(URL, { text = text }, { timeout_ms = TIMEOUT_MS })
    if res and res.status >= 200 and res.status < 300 then return true, try end
    last = res and ("HTTP " .. res.status .. " " .. (res.body or ""):sub(1, 200)) or err
    log.warn("webhook post failed", "try", try, "of", TRIES, last)
    if not retryable(res) then break end
    if try < TRIES then timer.sleep(BACKOFF_MS * (1 << (try - 1))) end
  end
  return nil, last
end

function on_disconnected(ev)
  local d = ev.data
  if type(d) ~= "table" then return end
  local em = d.errorMessage
  if em == nil or em == json.null or em == "" then return end -- a clean close
  local ok, err = post(message(ev))
  if not ok then
    -- Event Grid retries the event later (with its own backoff, for up to a day)
    error("webhook notification failed: " .. tostring(err), 0)
  end
end
