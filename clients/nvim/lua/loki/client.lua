-- A non-blocking lokid client over a unix socket (a libuv pipe). Every callback runs on the
-- main loop (vim.schedule). Requests are matched to replies by msgid; subscriptions are
-- remembered and made again after a reconnect.
local uv = vim.uv or vim.loop -- vim.uv since Neovim 0.10; vim.loop before (and deprecated after)
local wire = require("loki.wire")

local M = {}

--- The socket path, first match wins (PROTOCOL.md section 1): explicit setting,
--- $LOKID_SOCKET, $XDG_RUNTIME_DIR/lokid/lokid.sock, /tmp/lokid-$UID/lokid.sock
--- (macOS: ~/Library/Application Support/lokid/lokid.sock).
function M.socket_path(explicit)
  if explicit and explicit ~= "" then
    return explicit
  end
  local env = vim.env.LOKID_SOCKET
  if env and env ~= "" then
    return env
  end
  if vim.fn.has("mac") == 1 then
    return vim.fn.expand("~") .. "/Library/Application Support/lokid/lokid.sock"
  end
  local xdg = vim.env.XDG_RUNTIME_DIR
  if xdg and xdg ~= "" then
    return xdg .. "/lokid/lokid.sock"
  end
  return "/tmp/lokid-" .. uv.getuid() .. "/lokid.sock"
end

local Client = {}
Client.__index = Client

--- opts: socket (path or nil), name (client name for hello), on_state(state, info)
--- called on "connected", "reconnected", "disconnected", "failed"; backoff_min/max (ms);
--- start: a command (argv list, no shell) that starts lokid, run when a connect you asked
--- for finds nobody (never for a background reconnect); it gets LOKID_SOCKET = our path.
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({
    path = M.socket_path(opts.socket),
    name = opts.name or "nvim",
    start = opts.start,
    may_start = false, -- this connect was asked for, so `start` may run once for it
    on_state = opts.on_state or function() end,
    backoff_min = opts.backoff_min or 50,
    backoff_max = opts.backoff_max or 2000,
    state = "idle", -- idle | connecting | connected | closed
    pipe = nil,
    decoder = nil,
    next_id = 1,
    pending = {}, -- msgid -> callback(err, result)
    queued = {}, -- requests made while connecting: {method, params, cb}
    subs = {}, -- list of {topics, project, handler, sub = id on this connection}
    by_sub = {}, -- sub id -> subscription
    capabilities = {},
    server = nil,
    ever_connected = false,
    backoff = nil,
    timer = nil,
    generation = 0,
  }, Client)
  return self
end

--- Tell the owner what happened: connected, reconnected, disconnected, failed.
function Client:_set_state(what, info)
  self.on_state(what, info)
end

--- Connect now unless connected or connecting. cb(err) when the attempt settles.
--- A connect the user asked for (the default): if nobody answers, `start` runs once and
--- the connect is tried again. The permission lasts for this attempt only (a call while
--- connected grants nothing), so a later background reconnect never starts lokid.
--- opts.start = false: a background connect, which never starts lokid; requests and
--- subscriptions connect that way.
function Client:connect(cb, opts)
  if self.state ~= "connected" and not (opts and opts.start == false) then
    self.may_start = true
  end
  self:_connect(cb)
end

function Client:_connect(cb)
  if self.state == "connected" then
    if cb then
      cb(nil)
    end
    return
  end
  if cb then
    self.connect_waiters = self.connect_waiters or {}
    table.insert(self.connect_waiters, cb)
  end
  if self.state == "connecting" then
    return
  end
  self:_dial()
end

function Client:_dial()
  self.state = "connecting"
  self.generation = self.generation + 1
  local gen = self.generation
  local pipe = uv.new_pipe(false)
  self.pipe = pipe
  pipe:connect(self.path, function(err)
    vim.schedule(function()
      if gen ~= self.generation then
        return
      end
      if err then
        pcall(function()
          pipe:close()
        end)
        self.pipe = nil
        self:_connect_failed(err)
      else
        self:_connected(pipe, gen)
      end
    end)
  end)
end

function Client:_settle_waiters(err)
  local waiters = self.connect_waiters or {}
  self.connect_waiters = {}
  for _, cb in ipairs(waiters) do
    cb(err)
  end
end

--- Run `start` for a connect that was asked for; the connect waits for it (requests
--- stay queued), then dials again. Returns false when it may not run (then the caller
--- reports the failure); true when it ran or has reported its own failure.
function Client:_start_daemon(err)
  if not self.start or not self.may_start then
    return false
  end
  self.may_start = false
  local output = {}
  local function keep(_, lines)
    for _, line in ipairs(lines) do
      if line ~= "" then
        table.insert(output, line)
      end
    end
  end
  local ok, job = pcall(vim.fn.jobstart, self.start, {
    env = { LOKID_SOCKET = self.path },
    on_stdout = keep,
    on_stderr = keep,
    on_exit = function(_, code)
      vim.schedule(function()
        if code == 0 then
          self:_dial()
        else
          local said = output[#output] and (": " .. output[#output]) or ""
          local why = tostring(err) .. "; " .. self.start[1] .. " exited " .. code .. said
          self:_connect_failed(why)
        end
      end)
    end,
  })
  if not ok or job <= 0 then
    self:_connect_failed(tostring(err) .. "; could not run " .. tostring(self.start[1]))
  end
  return true
end

--- A connect attempt failed. Keep trying in the background (never starting lokid) once we
--- have been connected or follow something, so a lokid started later is found.
function Client:_connect_failed(err)
  if self:_start_daemon(err) then
    return
  end
  self.may_start = false
  local reconnecting = (self.ever_connected or #self.subs > 0) and not self.closed_by_user
  self.state = reconnecting and "reconnecting" or "idle"
  local msg = "lokid is not running on " .. self.path .. " (" .. tostring(err) .. ")"
  local queued = self.queued
  self.queued = {}
  for _, q in ipairs(queued) do
    q.cb({ code = "unavailable", message = msg })
  end
  self:_settle_waiters({ code = "unavailable", message = msg })
  if reconnecting then
    self:_schedule_reconnect()
  else
    self.on_state("failed", { message = msg })
  end
end

function Client:_connected(pipe, gen)
  self.decoder = wire.decoder()
  self.pending = {}
  self.by_sub = {}
  pipe:read_start(function(err, data)
    vim.schedule(function()
      if gen ~= self.generation then
        return
      end
      if err or not data then
        self:_lost(err or "closed by lokid")
      else
        self:_on_data(data)
      end
    end)
  end)
  -- hello first, before anything queued: its capabilities let callers feature-detect
  -- (project.status, signal.*). Requests made meanwhile wait in the queue.
  local id = self.next_id
  self.next_id = id + 1
  self.pending[id] = function(e, result)
    if self.pipe ~= pipe then
      return -- the connection was lost before hello answered
    end
    self.capabilities = {}
    if not e and result then
      self.server = result
      for _, name in ipairs(result.capabilities or {}) do
        self.capabilities[name] = true
      end
    end
    self.state = "connected"
    local first = not self.ever_connected
    self.ever_connected = true
    self.may_start = false
    self.backoff = nil
    local queued = self.queued
    self.queued = {}
    for _, q in ipairs(queued) do
      self:_send_request(q.method, q.params, q.cb)
    end
    for _, s in ipairs(self.subs) do
      self:_subscribe_now(s)
    end
    self:_settle_waiters(nil)
    self:_set_state(first and "connected" or "reconnected")
  end
  pipe:write(wire.request(id, "hello", { client = self.name, protocol = 1 }))
end

function Client:_lost(reason)
  if self.pipe == nil then
    return
  end
  local was_connected = self.state == "connected"
  self.generation = self.generation + 1
  local pipe = self.pipe
  self.pipe = nil
  if pipe then
    pcall(function()
      pipe:read_stop()
      pipe:close()
    end)
  end
  local pending = self.pending
  self.pending = {}
  self.by_sub = {}
  for _, s in ipairs(self.subs) do
    s.sub = nil
  end
  for _, cb in pairs(pending) do
    cb({ code = "unavailable", message = "connection to lokid lost: " .. tostring(reason) })
  end
  if not was_connected then
    -- Lost during hello: count it as a failed attempt.
    self.state = "connecting"
    self:_connect_failed(reason)
    return
  end
  if self.closed_by_user then
    self.state = "closed"
    return
  end
  self:_set_state("disconnected", { message = tostring(reason) })
  self.state = "reconnecting"
  self:_schedule_reconnect()
end

function Client:_schedule_reconnect()
  self.backoff = math.min((self.backoff or self.backoff_min / 2) * 2, self.backoff_max)
  if not self.timer then
    self.timer = uv.new_timer()
  end
  self.timer:stop()
  self.timer:start(self.backoff, 0, function()
    vim.schedule(function()
      if self.state == "reconnecting" then
        self.state = "idle"
        self:_connect()
      end
    end)
  end)
end

function Client:_on_data(data)
  local frames, err = self.decoder:feed(data)
  for _, body in ipairs(frames) do
    local kind, msg = wire.classify(body)
    if kind == "response" or kind == "error-response" then
      local id = wire.val(msg[2])
      local cb = id and self.pending[id]
      if cb then
        self.pending[id] = nil
        if kind == "response" then
          cb(nil, wire.val(msg[4]))
        else
          cb(msg[3], nil)
        end
      end
    elseif kind == "event" then
      local ev = msg[3]
      local s = self.by_sub[ev.sub]
      if s then
        local ok, e = pcall(s.handler, ev)
        if not ok then
          vim.notify("loki: event handler failed: " .. tostring(e), vim.log.levels.ERROR)
        end
      end
    end
  end
  if err then
    self:_lost("frame of " .. err.length .. " bytes over the limit")
  end
end

function Client:_send_request(method, params, cb)
  local id = self.next_id
  self.next_id = id + 1
  self.pending[id] = cb or function() end
  self.pipe:write(wire.request(id, method, params))
  return id
end

--- Send a request; cb(err, result) on the main loop. err is {code, message, data?}.
--- Connects first if needed, in the background (it never blocks: the request waits for
--- the connection; it never starts lokid: call connect() first for that).
function Client:request(method, params, cb)
  cb = cb or function() end
  if self.state == "connected" then
    return self:_send_request(method, params, cb)
  end
  table.insert(self.queued, { method = method, params = params, cb = cb })
  if self.state ~= "connecting" then
    self.state = "idle"
    self:_connect()
  end
end

--- Cancel a request in flight ($/cancel); its callback then gets `cancelled`.
function Client:cancel(msgid)
  if self.state == "connected" then
    self.pipe:write(wire.notification("$/cancel", { id = msgid }))
  end
end

function Client:has(method)
  return self.capabilities[method] == true
end

function Client:_subscribe_now(s)
  local params = { topics = s.topics }
  if s.project then
    params.project = s.project
  end
  self:_send_request("subscribe", params, function(err, result)
    if err then
      if s.on_error then
        s.on_error(err)
      end
      return
    end
    if s.dropped then
      self:request("unsubscribe", { sub = result.sub })
      return
    end
    s.sub = result.sub
    self.by_sub[result.sub] = s
    if s.on_subscribed then
      s.on_subscribed()
    end
  end)
end

--- Subscribe and stay subscribed across reconnects. Returns a handle for unsubscribe.
--- handler(event) gets the event params {sub, seq, topic, project, time, data}.
--- Subscribing connects in the background: it never starts lokid (connect() does).
function Client:subscribe(topics, project, handler, on_subscribed)
  local s = { topics = topics, project = project, handler = handler, on_subscribed = on_subscribed }
  table.insert(self.subs, s)
  if self.state == "connected" then
    self:_subscribe_now(s)
  elseif self.state ~= "connecting" then
    self.state = "idle"
    self:_connect()
  end
  return s
end

function Client:unsubscribe(s)
  s.dropped = true
  for i, x in ipairs(self.subs) do
    if x == s then
      table.remove(self.subs, i)
      break
    end
  end
  if s.sub and self.state == "connected" then
    self.by_sub[s.sub] = nil
    self:request("unsubscribe", { sub = s.sub })
  end
end

function Client:close()
  self.closed_by_user = true
  if self.timer then
    self.timer:stop()
    self.timer:close() -- a stopped libuv handle still lives until it is closed
    self.timer = nil
  end
  if self.pipe then
    self:_lost("closed")
  end
  self.state = "closed"
end

return M
