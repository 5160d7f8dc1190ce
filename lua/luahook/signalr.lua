-- luahook.signalr: a client for the Azure SignalR Service data-plane REST API
-- (api-version 2022-06-01), authenticated with the AccessKey of a connection string.
--
--   local signalr = require "luahook.signalr"
--   local client = assert(signalr.new(os.getenv("AzureSignalRConnectionString"),
--                                     { hub = "chat", timeout_ms = 5000 }))
--   local ok, err = client:send_to_connection(nil, ev.data.connectionId, "newMessage", { msg })
--   local chat = client:hub("chat")          -- the same methods, without the hub argument
--   chat:broadcast("connectionCount", { 3 }, { excluded = { "conn-1" } })
--
-- signalr.new(connection_string [, opts]) -> client | nil, err
--   opts: hub         default hub for calls that pass nil as hub
--         application optional `application=` query value (the service prefixes hubs with it)
--         timeout_ms  per request (default 10000)
--         token_ttl   lifetime of the access tokens in seconds (default 300, at most 3600)
--         api_version (default "2022-06-01")
--   client.endpoint is the base URL REST calls go to.
-- signalr.connect is another name for signalr.new.
-- signalr.parse_connection_string(s) -> { endpoint=, access_key=, version=, port=, ... } | nil, err
--
-- Methods (hub may be nil when opts.hub was given; args is a list of the client method's
-- arguments, nil meaning none):
--   client:broadcast(hub, target, args [, {excluded = {connection ids}}])
--   client:send_to_user(hub, user, target, args)
--   client:send_to_connection(hub, connection_id, target, args)
--   client:send_to_group(hub, group, target, args [, {excluded = {connection ids}}])
--   client:add_connection_to_group(hub, group, connection_id)
--   client:remove_connection_from_group(hub, group, connection_id)
--   client:remove_connection_from_all_groups(hub, connection_id)
--   client:add_user_to_group(hub, group, user [, {ttl = seconds}])
--   client:remove_user_from_group(hub, group, user)
--   client:remove_user_from_all_groups(hub, user)
--   client:close_connection(hub, connection_id [, reason])
--   client:close_all_connections(hub [, {excluded = {...}, reason = ...}])
--   client:close_group_connections(hub, group [, {excluded = {...}, reason = ...}])
--   client:close_user_connections(hub, user [, {excluded = {...}, reason = ...}])
--       -> true | nil, err, detail
--   client:connection_exists(hub, connection_id)
--   client:user_exists(hub, user)              (the user has at least one connection)
--   client:group_exists(hub, group)            (the group has at least one connection)
--   client:user_in_group(hub, group, user)
--   client:health()
--       -> true | false (404) | nil, err, detail
--
-- err is "signalr: <status> <code>: <message>" for an answer of the service that is not
-- a success (code from the ErrorDetail body or the x-ms-error-code header, message from
-- the body), and detail is {status=, code=, message=, body=}. A transport failure returns
-- the http module's error unchanged ("timeout: ...", "connect: ...", ...) and
-- detail = {transport = true}. Misuse (wrong argument types, a hub name the service
-- would refuse, an empty group) raises an error.
--
-- Each call is signed with a JWT (HS256, key = the bytes of AccessKey as written,
-- aud = the request URL without its query, exp = now + token_ttl); tokens are cached
-- per audience until a minute before they expire. Hub names are lower-cased, like the
-- service and its SDK do. Every path segment is percent-encoded.

local http, json, crypto = http, json, crypto
local os_time = os.time
local type, tostring, tonumber, pairs, ipairs, error, setmetatable, pcall =
  type, tostring, tonumber, pairs, ipairs, error, setmetatable, pcall
local concat = table.concat
local fmt = string.format

local M = { API_VERSION = "2022-06-01" }

local DEFAULT_TIMEOUT_MS = 10000
local DEFAULT_TOKEN_TTL = 300  -- seconds
local MAX_TOKEN_TTL = 3600
local TOKEN_MARGIN = 60        -- renew a cached token this long before it expires
local TOKEN_CACHE_MAX = 512    -- audiences remembered per client

-- ------------------------------------------------------------------ connection string

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

--- Parses "Endpoint=...;AccessKey=...;Version=1.0;[Port=...;]" (keys case-insensitive).
function M.parse_connection_string(cs)
  if type(cs) ~= "string" or trim(cs) == "" then
    return nil, "signalr: the connection string is missing"
  end
  local kv = {}
  for part in (cs .. ";"):gmatch("([^;]*);") do
    part = trim(part)
    if part ~= "" then
      local k, v = part:match("^([^=]*)=(.*)$")
      if not k then
        return nil, fmt("signalr: connection string: '%s' is not key=value", part)
      end
      k = trim(k):lower()
      v = trim(v)
      if k == "" then return nil, "signalr: connection string: empty key" end
      if kv[k] ~= nil then
        return nil, fmt("signalr: connection string: duplicate key '%s'", k)
      end
      kv[k] = v
    end
  end
  if kv.authtype and kv.authtype ~= "" and kv.authtype:lower() ~= "accesskey" then
    return nil, fmt("signalr: connection string: AuthType=%s is not supported (only AccessKey)",
                    kv.authtype)
  end
  local endpoint = kv.endpoint
  if not endpoint or endpoint == "" then
    return nil, "signalr: connection string: Endpoint is missing"
  end
  if not kv.accesskey or kv.accesskey == "" then
    return nil, "signalr: connection string: AccessKey is missing"
  end
  if kv.version and kv.version ~= "" and kv.version ~= "1.0" then
    return nil, fmt("signalr: connection string: Version=%s is not supported (1.0)", kv.version)
  end

  local function base_url(url, port, what)
    url = url:gsub("/+$", "")
    local scheme, host, rest = url:match("^(%a[%w+.-]*)://([^/?#]+)(.*)$")
    if not scheme then
      return nil, fmt("signalr: connection string: %s '%s' is not an http(s) URL", what, url)
    end
    scheme = scheme:lower()
    if scheme ~= "http" and scheme ~= "https" then
      return nil, fmt("signalr: connection string: %s '%s' is not an http(s) URL", what, url)
    end
    if rest:find("[?#]") then
      return nil, fmt("signalr: connection string: %s must not have a query", what)
    end
    if port then
      host = host:gsub(":%d+$", "")  -- Port replaces a port written in the URL
      local default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
      if not default then host = host .. ":" .. port end
    end
    return scheme .. "://" .. host .. rest
  end

  local port
  if kv.port and kv.port ~= "" then
    port = tonumber(kv.port)
    if not port or port ~= port // 1 or port < 1 or port > 65535 then
      return nil, fmt("signalr: connection string: Port '%s' is not a port number", kv.port)
    end
    port = port // 1
  end
  local url, err = base_url(endpoint, port, "Endpoint")
  if not url then return nil, err end
  local rest_url = url
  if kv.serverendpoint and kv.serverendpoint ~= "" then
    rest_url, err = base_url(kv.serverendpoint, nil, "ServerEndpoint")
    if not rest_url then return nil, err end
  end
  return {
    endpoint = url,            -- Endpoint (+ Port)
    rest_endpoint = rest_url,  -- where REST calls go (ServerEndpoint when given)
    access_key = kv.accesskey,
    version = kv.version ~= "" and kv.version or nil,
    port = port,
    client_endpoint = kv.clientendpoint,
  }
end

-- ------------------------------------------------------------------ URLs

local function pct(c)
  return fmt("%%%02X", c:byte())
end

--- Percent-encodes everything but the RFC 3986 unreserved characters.
function M.url_encode(s)
  s = tostring(s)
  if s:match("^%.+$") then return (s:gsub(".", pct)) end -- no "." / ".." path segments
  return (s:gsub("[^%w%-%._~]", pct))
end
local enc = M.url_encode

local HUB_PATTERN_HINT = "^[A-Za-z][A-Za-z0-9_`,.[\\]]{0,127}$"

--- A hub name as the service wants it (lower-cased), or raises.
local function check_hub(hub, level)
  if type(hub) ~= "string" then
    error("signalr: hub must be a string (or set opts.hub in signalr.new)", level + 1)
  end
  if #hub < 1 or #hub > 128 or not hub:match("^%a[%w_`,%.%[%]]*$") then
    error(fmt("signalr: invalid hub name %q (must match %s)", hub, HUB_PATTERN_HINT), level + 1)
  end
  return hub:lower()
end

local function check_str(v, what, level, maxlen)
  if type(v) == "number" then v = tostring(v) end
  if type(v) ~= "string" or v == "" then
    error(fmt("signalr: %s must be a non-empty string", what), level + 1)
  end
  if maxlen and #v > maxlen then
    error(fmt("signalr: %s is longer than %d bytes", what, maxlen), level + 1)
  end
  return v
end

-- ------------------------------------------------------------------ tokens

local JWT_HEADER = crypto.base64url_encode('{"alg":"HS256","typ":"JWT"}')

local function sign(key, aud, exp, iat)
  local claims = '{"aud":' .. json.encode(aud) .. ',"exp":' .. fmt("%d", exp)
                 .. ',"iat":' .. fmt("%d", iat) .. '}'
  local input = JWT_HEADER .. "." .. crypto.base64url_encode(claims)
  return input .. "." .. crypto.base64url_encode(crypto.hmac_sha256(key, input))
end

--- A bearer token for aud (cached until TOKEN_MARGIN seconds before expiry).
local function token(self, aud)
  local now = os_time()
  local cache = self._tokens
  local t = cache[aud]
  if t and t.exp - now > TOKEN_MARGIN then return t.jwt end
  if not t then
    if self._ntokens >= TOKEN_CACHE_MAX then
      -- forget the expiring ones; when that frees nothing, start over
      for k, v in pairs(cache) do
        if v.exp - now <= TOKEN_MARGIN then cache[k] = nil; self._ntokens = self._ntokens - 1 end
      end
      if self._ntokens >= TOKEN_CACHE_MAX then cache = {}; self._tokens = cache; self._ntokens = 0 end
    end
    self._ntokens = self._ntokens + 1
  end
  local exp = now + self.token_ttl
  local jwt = sign(self._key, aud, exp, now)
  cache[aud] = { jwt = jwt, exp = exp }
  return jwt
end

-- ------------------------------------------------------------------ requests

local function error_result(res)
  local code = res.headers and res.headers["x-ms-error-code"]
  local message
  local body = res.body or ""
  if body ~= "" then
    local ok, d = pcall(json.decode, body)
    if ok and type(d) == "table" then
      if type(d.code) == "string" and d.code ~= "" then code = d.code end
      if type(d.message) == "string" then message = d.message end
    end
    if not message then
      message = trim(body)
      if #message > 300 then message = message:sub(1, 300) .. "..." end
      if message == "" then message = nil end
    end
  end
  local err = "signalr: " .. res.status
  if code and code ~= "" then err = err .. " " .. code end
  if message then err = err .. ": " .. message end
  return nil, err, { status = res.status, code = code, message = message, body = res.body }
end

-- path: already encoded, starting with "/api/..."; query: list of {name, value}
local function call(self, method, path, query, body, existence)
  local url = self.endpoint .. path
  local q = { "api-version=" .. enc(self.api_version) }
  if self.application then q[#q + 1] = "application=" .. enc(self.application) end
  for _, p in ipairs(query or {}) do q[#q + 1] = p[1] .. "=" .. enc(p[2]) end
  local headers = { Authorization = "Bearer " .. token(self, url) }
  if body ~= nil then
    headers["Content-Type"] = "application/json"
  elseif method == "PUT" or method == "POST" then
    body = "" -- Content-Length: 0
  end
  local res, err = http.request {
    method = method, url = url .. "?" .. concat(q, "&"), headers = headers, body = body,
    timeout_ms = self.timeout_ms,
  }
  if not res then return nil, err, { transport = true } end
  local s = res.status
  if existence then
    if s == 404 then return false end
    if s >= 200 and s < 300 then return true end
  elseif s >= 200 and s < 300 then
    return true
  end
  return error_result(res)
end

local function payload(target, args, level)
  if type(target) ~= "string" or target == "" then
    error("signalr: target must be a non-empty string (the client method's name)", level + 1)
  end
  local list = json.array()
  if args ~= nil then
    if type(args) ~= "table" then
      error("signalr: args must be a list of the client method's arguments", level + 1)
    end
    local n = args.n or #args
    for i = 1, n do
      local v = args[i]
      if v == nil then v = json.null end
      list[i] = v
    end
  end
  local enc_args, err = json.encode(list)
  if not enc_args then error("signalr: cannot encode args: " .. tostring(err), level + 1) end
  return '{"target":' .. json.encode(target) .. ',"arguments":' .. enc_args .. '}'
end

local function excluded_query(opts, level, q)
  q = q or {}
  if opts == nil then return q end
  if type(opts) ~= "table" then error("signalr: options must be a table", level + 1) end
  local ex = opts.excluded
  if ex ~= nil then
    if type(ex) ~= "table" then
      error("signalr: excluded must be a list of connection ids", level + 1)
    end
    for _, id in ipairs(ex) do
      q[#q + 1] = { "excluded", check_str(id, "an excluded connection id", level + 1) }
    end
  end
  return q
end

local Client = {}
Client.__index = Client

function Client:_hub(hub, level)
  if hub == nil then hub = self.default_hub end
  return "/api/hubs/" .. enc(check_hub(hub, level + 1))
end

function Client:broadcast(hub, target, args, opts)
  local p = self:_hub(hub, 2) .. "/:send"
  return call(self, "POST", p, excluded_query(opts, 2), payload(target, args, 2))
end

function Client:send_to_user(hub, user, target, args)
  local p = self:_hub(hub, 2) .. "/users/" .. enc(check_str(user, "user", 2)) .. "/:send"
  return call(self, "POST", p, nil, payload(target, args, 2))
end

function Client:send_to_connection(hub, connection_id, target, args)
  local p = self:_hub(hub, 2) .. "/connections/"
            .. enc(check_str(connection_id, "connection id", 2)) .. "/:send"
  return call(self, "POST", p, nil, payload(target, args, 2))
end

function Client:send_to_group(hub, group, target, args, opts)
  local p = self:_hub(hub, 2) .. "/groups/" .. enc(check_str(group, "group", 2, 1024)) .. "/:send"
  return call(self, "POST", p, excluded_query(opts, 2), payload(target, args, 2))
end

function Client:add_connection_to_group(hub, group, connection_id)
  local p = self:_hub(hub, 2) .. "/groups/" .. enc(check_str(group, "group", 2, 1024))
            .. "/connections/" .. enc(check_str(connection_id, "connection id", 2))
  return call(self, "PUT", p)
end

function Client:remove_connection_from_group(hub, group, connection_id)
  local p = self:_hub(hub, 2) .. "/groups/" .. enc(check_str(group, "group", 2, 1024))
            .. "/connections/" .. enc(check_str(connection_id, "connection id", 2))
  return call(self, "DELETE", p)
end

function Client:remove_connection_from_all_groups(hub, connection_id)
  local p = self:_hub(hub, 2) .. "/connections/"
            .. enc(check_str(connection_id, "connection id", 2)) .. "/groups"
  return call(self, "DELETE", p)
end

function Client:add_user_to_group(hub, group, user, opts)
  local p = self:_hub(hub, 2) .. "/users/" .. enc(check_str(user, "user", 2))
            .. "/groups/" .. enc(check_str(group, "group", 2, 1024))
  local q
  if opts ~= nil then
    if type(opts) ~= "table" then error("signalr: options must be a table", 2) end
    if opts.ttl ~= nil then
      local ttl = opts.ttl
      if math.type(ttl) == "float" and ttl == ttl // 1 then ttl = math.tointeger(ttl) end
      if math.type(ttl) ~= "integer" or ttl < 0 then
        error("signalr: ttl must be a whole number of seconds >= 0", 2)
      end
      q = { { "ttl", fmt("%d", ttl) } }
    end
  end
  return call(self, "PUT", p, q)
end

function Client:remove_user_from_group(hub, group, user)
  local p = self:_hub(hub, 2) .. "/users/" .. enc(check_str(user, "user", 2))
            .. "/groups/" .. enc(check_str(group, "group", 2, 1024))
  return call(self, "DELETE", p)
end

function Client:remove_user_from_all_groups(hub, user)
  local p = self:_hub(hub, 2) .. "/users/" .. enc(check_str(user, "user", 2)) .. "/groups"
  return call(self, "DELETE", p)
end

function Client:close_connection(hub, connection_id, reason)
  local p = self:_hub(hub, 2) .. "/connections/" .. enc(check_str(connection_id, "connection id", 2))
  local q
  if reason ~= nil then q = { { "reason", check_str(reason, "reason", 2) } } end
  return call(self, "DELETE", p, q)
end

local function close_query(opts, level)
  local q = excluded_query(opts, level + 1)
  if opts and opts.reason ~= nil then
    q[#q + 1] = { "reason", check_str(opts.reason, "reason", level + 1) }
  end
  return q
end

function Client:close_all_connections(hub, opts)
  return call(self, "POST", self:_hub(hub, 2) .. "/:closeConnections", close_query(opts, 2))
end

function Client:close_group_connections(hub, group, opts)
  local p = self:_hub(hub, 2) .. "/groups/" .. enc(check_str(group, "group", 2, 1024))
            .. "/:closeConnections"
  return call(self, "POST", p, close_query(opts, 2))
end

function Client:close_user_connections(hub, user, opts)
  local p = self:_hub(hub, 2) .. "/users/" .. enc(check_str(user, "user", 2)) .. "/:closeConnections"
  return call(self, "POST", p, close_query(opts, 2))
end

function Client:connection_exists(hub, connection_id)
  local p = self:_hub(hub, 2) .. "/connections/" .. enc(check_str(connection_id, "connection id", 2))
  return call(self, "HEAD", p, nil, nil, true)
end

function Client:user_exists(hub, user)
  local p = self:_hub(hub, 2) .. "/users/" .. enc(check_str(user, "user", 2))
  return call(self, "HEAD", p, nil, nil, true)
end

function Client:group_exists(hub, group)
  local p = self:_hub(hub, 2) .. "/groups/" .. enc(check_str(group, "group", 2, 1024))
  return call(self, "HEAD", p, nil, nil, true)
end

function Client:user_in_group(hub, group, user)
  local p = self:_hub(hub, 2) .. "/users/" .. enc(check_str(user, "user", 2))
            .. "/groups/" .. enc(check_str(group, "group", 2, 1024))
  return call(self, "HEAD", p, nil, nil, true)
end

function Client:health()
  return call(self, "HEAD", "/api/health", nil, nil, true)
end

--- A view of the client bound to one hub: the same methods without the hub argument.
function Client:hub(name)
  local h = check_hub(name, 2)
  local view = { client = self, name = h }
  return setmetatable(view, {
    __index = function(_, k)
      local f = Client[k]
      if type(f) ~= "function" or k == "hub" or k == "health" or k:sub(1, 1) == "_" then
        return self[k]
      end
      return function(v, ...)
        if v ~= view then error("signalr: call hub methods with ':'", 2) end
        return f(self, h, ...)
      end
    end,
  })
end

function Client:__tostring()
  return "signalr client " .. self.endpoint
end

function M.new(cs, opts)
  if opts ~= nil and type(opts) ~= "table" then error("signalr.new: opts must be a table", 2) end
  opts = opts or {}
  local p, err = M.parse_connection_string(cs)
  if not p then return nil, err end
  local ttl = opts.token_ttl or DEFAULT_TOKEN_TTL
  if type(ttl) ~= "number" or ttl < 2 * TOKEN_MARGIN or ttl > MAX_TOKEN_TTL then
    error(fmt("signalr.new: token_ttl must be %d..%d seconds", 2 * TOKEN_MARGIN, MAX_TOKEN_TTL), 2)
  end
  local timeout = opts.timeout_ms or DEFAULT_TIMEOUT_MS
  if type(timeout) ~= "number" or timeout <= 0 then
    error("signalr.new: timeout_ms must be a number > 0", 2)
  end
  if opts.application ~= nil then check_str(opts.application, "application", 2) end
  local default_hub
  if opts.hub ~= nil then default_hub = check_hub(opts.hub, 2) end
  return setmetatable({
    endpoint = p.rest_endpoint,
    default_hub = default_hub,
    application = opts.application,
    api_version = opts.api_version or M.API_VERSION,
    timeout_ms = math.tointeger(timeout // 1) or DEFAULT_TIMEOUT_MS,
    token_ttl = ttl // 1,
    _key = p.access_key,
    _tokens = {},
    _ntokens = 0,
  }, Client)
end
M.connect = M.new

--- Signs a token like the client does (for negotiate endpoints and tests).
function M.token(access_key, aud, ttl)
  local now = os_time()
  return sign(access_key, aud, now + (ttl or DEFAULT_TOKEN_TTL), now)
end

return M
