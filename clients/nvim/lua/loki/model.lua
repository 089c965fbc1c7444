-- The live model: per project its status, tasks, dead letters and event log, kept current
-- over one lokid connection (events, then a coalesced re-read). It draws nothing: the view
-- (ui.lua) is told what changed and asked which lists it shows.
local clientmod = require("loki.client")
local config = require("loki.config")
local render = require("loki.render")
local wire = require("loki.wire")
local val = wire.val

local M = {}

local client = nil
local projects = {} -- path -> model

-- The view: changed(m, what, arg) after a change (m is nil for the connection's own news:
-- "lost", "back"); wants(m, kind) says whether list `kind` ("tasks", "dlq") is shown.
local view = {
  changed = function() end,
  wants = function()
    return false
  end,
}

function M.set_view(v)
  view = v
end

--- The model of `path`, made on first use.
function M.get(path)
  local m = projects[path]
  if not m then
    m = { path = path, status = nil, tasks = nil, dlq = nil, events = {}, sub = nil }
    projects[path] = m
  end
  return m
end

--- The model of `path` if it has one (nothing is made).
function M.find(path)
  return projects[path]
end

local function start_command()
  if config.start == false then
    return nil
  end
  if config.start == nil then
    return vim.fn.executable("lokictl") == 1 and { "lokictl", "ping" } or nil
  end
  return config.start
end

local function on_state(state, info)
  if state == "disconnected" then
    for _, m in pairs(projects) do
      m.status = nil
    end
    view.changed(nil, "lost", info)
  elseif state == "reconnected" then
    view.changed(nil, "back", info)
  end
end

function M.client()
  if not client then
    client = clientmod.new({
      socket = config.socket or vim.g.loki_socket,
      name = "nvim",
      start = start_command(),
      on_state = on_state,
    })
  end
  return client
end

function M.connected()
  return client ~= nil and client.state == "connected"
end

--- After a new socket setting: drop the connection and follow the same projects anew.
function M.reset()
  if not client then
    return
  end
  client:close()
  client = nil
  for _, m in pairs(projects) do
    if m.sub then
      m.sub = nil
      M.watch(m.path)
    end
  end
end

-- -- fetching ----------------------------------------------------------------------------

--- Status from project.status when lokid serves it, else put together from queue.stats,
--- breaker.list and run.status.
local function fetch_status(path, cb)
  local c = M.client()
  c:connect(function(cerr)
    if cerr then
      return cb(cerr)
    end
    if c:has("project.status") then
      return c:request("project.status", { project = path }, cb)
    end
    local st = { path = path, signals = {}, queue = {}, breakers = {}, run = nil, partial = true }
    local left = 3
    local first_err = nil
    local function done(e)
      if e and not first_err then
        first_err = e
      end
      left = left - 1
      if left == 0 then
        if st.queue_err then
          return cb(first_err)
        end
        cb(nil, st)
      end
    end
    c:request("queue.stats", { project = path }, function(e, r)
      if r then
        st.queue = r.states
      else
        st.queue_err = true
      end
      done(e)
    end)
    c:request("breaker.list", { project = path }, function(_, r)
      if r then
        st.breakers = r.breakers
      end
      done(nil)
    end)
    if c:has("run.status") then
      c:request("run.status", { project = path }, function(_, r)
        if r then
          st.run = val(r.run)
        end
        done(nil)
      end)
    else
      done(nil)
    end
  end, { start = false }) -- a refresh is never a reason to start lokid
end

local function fetch_tasks(path, cb)
  local c = M.client()
  local result = {}
  local left = #render.STATES
  local failed = nil
  for _, state in ipairs(render.STATES) do
    c:request("queue.list", { project = path, state = state, limit = config.list_limit }, function(e, r)
      if e then
        failed = failed or e
      else
        result[state] = { tasks = r.tasks, more = val(r.cursor) ~= nil }
      end
      left = left - 1
      if left == 0 then
        if failed then
          cb(failed)
        else
          cb(nil, result)
        end
      end
    end)
  end
end

local function fetch_dlq(path, cb)
  M.client():request("dlq.list", { project = path }, function(e, r)
    cb(e, r and r.tasks)
  end)
end

-- -- refresh, coalesced ---------------------------------------------------------------------

local function refresh_now(m)
  m.refreshing = true
  local left = 1
  local function done()
    left = left - 1
    if left == 0 then
      m.refreshing = false
      m.refreshed = (m.refreshed or 0) + 1
      if m.again then
        m.again = false
        refresh_now(m)
      end
    end
  end
  fetch_status(m.path, function(e, st)
    if e then
      m.status_err = render.err_text(e)
    else
      m.status, m.status_err = st, nil
      -- project.status carries the project's last events: the log starts with them.
      local recent = val(st.events)
      if #m.events == 0 and type(recent) == "table" then
        for _, ev in ipairs(recent) do
          table.insert(m.events, render.event_line(ev))
        end
        if #m.events > 0 then
          view.changed(m, "events")
        end
      end
    end
    view.changed(m, "status")
    done()
  end)
  -- A list the view shows: fetch its data into m[kind], then tell the view.
  local function list(kind, fetch)
    if not view.wants(m, kind) then
      return
    end
    left = left + 1
    fetch(m.path, function(e, data)
      if e then
        m[kind .. "_err"] = render.err_text(e)
      else
        m[kind], m[kind .. "_err"] = data, nil
      end
      view.changed(m, kind)
      done()
    end)
  end
  list("tasks", fetch_tasks)
  list("dlq", fetch_dlq)
end

--- Connect as the user asked (a lokid that is not running may be started), then send
--- the request; cb(err, result).
function M.ask(method, params, cb)
  local c = M.client()
  c:connect(function(err)
    if err then
      return cb(err)
    end
    c:request(method, params, cb)
  end)
end

--- Re-read the project's state; calls made while a refresh is running fold into one more.
function M.refresh(path)
  local m = M.get(path)
  if m.refreshing then
    m.again = true
  else
    refresh_now(m)
  end
end

-- -- events -------------------------------------------------------------------------------

local function on_event(m, ev)
  local line = render.event_line(ev)
  table.insert(m.events, line)
  if #m.events > config.max_events then
    table.remove(m.events, 1)
  end
  view.changed(m, "event", { line = line, event = ev })
  if ev.topic ~= "run.log" and ev.topic ~= "image.pull" then
    M.refresh(m.path)
  end
end

--- Follow a project live (idempotent): subscribe to all its events; every (re)subscription
--- re-reads its state, so a reconnect or a resync leaves nothing stale. `asked`: the user
--- asked for it (a command), so a lokid that is not running may be started; otherwise
--- (a statusline) the connection is made in the background and never starts lokid.
function M.watch(path, asked)
  local m = M.get(path)
  local c = M.client()
  if not m.sub then
    m.sub = c:subscribe({ "*" }, m.path, function(ev)
      on_event(m, ev)
    end, function()
      m.subscribed = (m.subscribed or 0) + 1
      M.refresh(m.path)
    end)
  end
  if asked then
    c:connect()
  end
  return m
end

return M
