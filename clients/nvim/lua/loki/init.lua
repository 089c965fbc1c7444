-- Loki Mode in Neovim, live over lokid's socket. Project = the current working directory.
local wire = require("loki.wire")
local clientmod = require("loki.client")
local val = wire.val

local M = {}

M.config = {
  socket = nil, -- nil: $LOKID_SOCKET, then the default path (as lokictl)
  notify = true, -- vim.notify on breaker opened, dead-lettered task, run exited
  max_events = 1000, -- lines kept in the events buffer
  list_limit = 200, -- tasks shown per state in the tasks buffer
  -- Start lokid when a command finds it not running: nil = `lokictl ping` if lokictl is
  -- on PATH (it uses the installed service, else spawns lokid), false = never, or argv.
  start = nil,
}

local STATES = { "pending", "in-progress", "completed", "dead-letter", "cancelled" }
M.STATES = STATES

local client = nil
local projects = {} -- path -> model
local said_lost = false

local function notify(msg, level)
  vim.notify(msg, level or vim.log.levels.INFO, { title = "loki" })
end

function M.setup(opts)
  M.config = vim.tbl_extend("force", M.config, opts or {})
  if client then
    -- A new socket: drop the old connection and follow the same projects on the new one.
    client:close()
    client = nil
    for _, m in pairs(projects) do
      if m.sub then
        m.sub = nil
        M.watch(m.path)
      end
    end
  end
end

--- The project: the logical $PWD when it is the current directory (as lokictl sends it),
--- else Neovim's working directory; absolute, without a trailing slash.
function M.project()
  local cwd = vim.fn.getcwd()
  local pwd = vim.env.PWD
  if pwd and pwd ~= "" and pwd ~= cwd and vim.loop.fs_realpath(pwd) == vim.loop.fs_realpath(cwd) then
    cwd = pwd
  end
  if #cwd > 1 then
    cwd = cwd:gsub("/+$", "")
  end
  return cwd
end

local function model(path)
  local m = projects[path]
  if not m then
    m = { path = path, status = nil, tasks = nil, dlq = nil, events = {}, sub = nil }
    projects[path] = m
  end
  return m
end

local function err_text(err)
  if type(err) == "table" then
    return tostring(err.code) .. ": " .. tostring(err.message)
  end
  return tostring(err)
end

local function start_command()
  if M.config.start == false then
    return nil
  end
  if M.config.start == nil then
    return vim.fn.executable("lokictl") == 1 and { "lokictl", "ping" } or nil
  end
  return M.config.start
end

function M.client()
  if not client then
    client = clientmod.new({
      socket = M.config.socket or vim.g.loki_socket,
      name = "nvim",
      start = start_command(),
      on_state = function(state, info)
        if state == "disconnected" then
          if not said_lost then
            said_lost = true
            notify("lokid connection lost (" .. info.message .. "); reconnecting", vim.log.levels.WARN)
          end
          for _, m in pairs(projects) do
            m.status = nil
          end
          vim.cmd("redrawstatus")
        elseif state == "reconnected" then
          if said_lost then
            said_lost = false
            notify("lokid reconnected")
          end
        end
      end,
    })
  end
  return client
end

-- -- rendering helpers ----------------------------------------------------------------

local function scratch(name, filetype)
  local buf = vim.fn.bufnr(name)
  if buf == -1 or not vim.api.nvim_buf_is_valid(buf) then
    buf = vim.api.nvim_create_buf(true, true)
    vim.api.nvim_buf_set_name(buf, name)
    vim.api.nvim_buf_set_option(buf, "buftype", "nofile")
    vim.api.nvim_buf_set_option(buf, "bufhidden", "hide")
    vim.api.nvim_buf_set_option(buf, "swapfile", false)
    vim.api.nvim_buf_set_option(buf, "filetype", filetype or "loki")
    vim.api.nvim_buf_set_option(buf, "modifiable", false)
  end
  return buf
end

local function show(buf)
  local win = vim.fn.bufwinid(buf)
  if win == -1 then
    vim.cmd("split")
    vim.api.nvim_win_set_buf(0, buf)
  else
    vim.api.nvim_set_current_win(win)
  end
end

local function set_lines(buf, lines)
  if not vim.api.nvim_buf_is_valid(buf) then
    return
  end
  vim.api.nvim_buf_set_option(buf, "modifiable", true)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.api.nvim_buf_set_option(buf, "modifiable", false)
end

local function buf_for(kind, path)
  local buf = vim.fn.bufnr("loki://" .. kind .. "/" .. path)
  if buf ~= -1 and vim.api.nvim_buf_is_valid(buf) then
    return buf
  end
  return nil
end

local function one_line(s)
  s = tostring(s or "")
  return (s:gsub("[\r\n]+", " "))
end

local function task_title(t)
  local title = val(t.title)
  if type(title) == "string" and title ~= "" then
    return title
  end
  local p = val(t.payload)
  if type(p) == "table" then
    for _, k in ipairs({ "goal", "action", "target" }) do
      if type(val(p[k])) == "string" then
        return p[k]
      end
    end
  end
  return ""
end

-- -- status -------------------------------------------------------------------------------

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
    c:request("breaker.list", { project = path }, function(e, r)
      if r then
        st.breakers = r.breakers
      end
      done(nil)
    end)
    if c:has("run.status") then
      c:request("run.status", { project = path }, function(e, r)
        if r then
          st.run = val(r.run)
        end
        done(nil)
      end)
    else
      done(nil)
    end
  end)
end

local function status_lines(m)
  local st = m.status
  local lines = { "Loki " .. m.path, "" }
  if not st then
    table.insert(lines, "(no status: " .. (m.status_err or "lokid not connected") .. ")")
    return lines
  end
  local flags = {}
  if val(st.missing) then
    table.insert(flags, "MISSING")
  end
  if val(st.paused) then
    table.insert(flags, "PAUSED")
  end
  if val(st.stopping) then
    table.insert(flags, "STOPPING")
  end
  if #flags > 0 then
    table.insert(lines, "State:    " .. table.concat(flags, " "))
  end
  local run = val(st.run)
  if type(run) == "table" then
    local port = val(run.port)
    table.insert(
      lines,
      string.format(
        "Run:      %s %s (%s)%s",
        tostring(val(run.state) or "?"),
        tostring(val(run.container) or ""),
        tostring(val(run.image) or ""),
        port and (" port " .. port) or ""
      )
    )
  else
    table.insert(lines, "Run:      none")
  end
  local q = val(st.queue) or {}
  local parts = {}
  for _, s in ipairs(STATES) do
    table.insert(parts, s .. " " .. tostring(val(q[s]) or 0))
  end
  table.insert(lines, "Queue:    " .. table.concat(parts, ", "))
  local br = val(st.breakers) or {}
  local names = vim.tbl_keys(br)
  table.sort(names)
  if #names == 0 then
    table.insert(lines, "Breakers: all closed")
  else
    table.insert(lines, "Breakers:")
    for _, name in ipairs(names) do
      local b = br[name]
      table.insert(
        lines,
        string.format("  %-20s %-9s failures %s", name, tostring(val(b.state)), tostring(val(b.failures) or 0))
      )
    end
  end
  local sig = val(st.signals)
  if type(sig) == "table" and #sig > 0 then
    table.insert(lines, "Signals:  " .. table.concat(sig, ", "))
  elseif st.partial then
    table.insert(lines, "Signals:  (this lokid does not serve project.status)")
  else
    table.insert(lines, "Signals:  none")
  end
  local dash = val(st.dashboard)
  if type(dash) == "table" then
    table.insert(
      lines,
      string.format(
        "Loki:     mode %s, phase %s, iteration %s",
        tostring(val(dash.mode)),
        tostring(val(dash.phase)),
        tostring(val(dash.iteration))
      )
    )
  end
  return lines
end

-- -- tasks --------------------------------------------------------------------------------

local buf_items = {} -- bufnr -> {line -> task id}

local function fetch_tasks(path, cb)
  local c = M.client()
  local result = {}
  local left = #STATES
  local failed = nil
  for _, state in ipairs(STATES) do
    c:request("queue.list", { project = path, state = state, limit = M.config.list_limit }, function(e, r)
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

-- A list buffer (`m[kind]` holds its data): a header, then `rows(data, lines, items)` or why
-- there is no data yet. `items` maps a line number to the task id on it.
local function render_list(m, kind, header, rows)
  local buf = buf_for(kind, m.path)
  if not buf then
    return
  end
  local lines = { header, "" }
  local items = {}
  if not m[kind] then
    table.insert(lines, "(" .. (m[kind .. "_err"] or "loading") .. ")")
  else
    rows(m[kind], lines, items)
  end
  buf_items[buf] = items
  set_lines(buf, lines)
end

local function render_tasks(m)
  local header = "Loki tasks " .. m.path .. "   (<CR> shows a task; live)"
  render_list(m, "tasks", header, function(tasks, lines, items)
    for _, state in ipairs(STATES) do
      local group = tasks[state] or { tasks = {} }
      table.insert(lines, string.format("## %s (%d%s)", state, #group.tasks, group.more and "+" or ""))
      for _, t in ipairs(group.tasks) do
        local who = val(t.claimedBy)
        table.insert(
          lines,
          string.format(
            "  %s  %s  p%s%s  %s",
            t.id,
            tostring(val(t.type)),
            tostring(val(t.priority)),
            who and ("  @" .. who) or "",
            one_line(task_title(t))
          )
        )
        items[#lines] = t.id
      end
      table.insert(lines, "")
    end
  end)
end

-- -- dead letters -------------------------------------------------------------------------

local function render_dlq(m)
  local header = "Loki dead letters " .. m.path .. "   (r retry, D delete, <CR> show)"
  render_list(m, "dlq", header, function(dlq, lines, items)
    if #dlq == 0 then
      table.insert(lines, "(none)")
    end
    for _, t in ipairs(dlq) do
      table.insert(
        lines,
        string.format(
          "  %s  %s  retries %s  %s",
          t.id,
          tostring(val(t.type)),
          tostring(val(t.retries)),
          one_line(val(t.lastError) or "")
        )
      )
      items[#lines] = t.id
    end
  end)
end

local event_line -- defined with the events below

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
      m.status_err = err_text(e)
    else
      m.status, m.status_err = st, nil
      -- project.status carries the project's last events: the log starts with them.
      local recent = val(st.events)
      if #m.events == 0 and type(recent) == "table" then
        for _, ev in ipairs(recent) do
          table.insert(m.events, event_line(ev))
        end
        local ebuf = buf_for("events", m.path)
        if ebuf and #m.events > 0 then
          local lines = { "Loki events " .. m.path .. "   (live)" }
          vim.list_extend(lines, m.events)
          set_lines(ebuf, lines)
        end
      end
    end
    local buf = buf_for("status", m.path)
    if buf then
      set_lines(buf, status_lines(m))
    end
    vim.cmd("redrawstatus")
    done()
  end)
  -- A list buffer that is open: fetch its data into m[kind], then render it.
  local function list(kind, fetch, render)
    if not buf_for(kind, m.path) then
      return
    end
    left = left + 1
    fetch(function(e, data)
      if e then
        m[kind .. "_err"] = err_text(e)
      else
        m[kind], m[kind .. "_err"] = data, nil
      end
      render(m)
      done()
    end)
  end
  list("tasks", function(cb)
    fetch_tasks(m.path, cb)
  end, render_tasks)
  list("dlq", function(cb)
    M.client():request("dlq.list", { project = m.path }, function(e, r)
      cb(e, r and r.tasks)
    end)
  end, render_dlq)
end

--- Re-read the project's state; calls made while a refresh is running fold into one more.
function M.refresh(path)
  local m = model(path or M.project())
  if m.refreshing then
    m.again = true
  else
    refresh_now(m)
  end
end

-- -- events -------------------------------------------------------------------------------

function event_line(ev)
  local data = val(ev.data)
  local text = ""
  if data ~= nil then
    local ok, j = pcall(vim.json.encode, data)
    text = ok and j or vim.inspect(data)
  end
  return string.format("%s %s %s", tostring(ev.time), ev.topic, one_line(text))
end

local function on_event(m, ev)
  local line = event_line(ev)
  table.insert(m.events, line)
  if #m.events > M.config.max_events then
    table.remove(m.events, 1)
  end
  local buf = buf_for("events", m.path)
  if buf then
    vim.api.nvim_buf_set_option(buf, "modifiable", true)
    vim.api.nvim_buf_set_lines(buf, -1, -1, false, { line })
    local n = vim.api.nvim_buf_line_count(buf)
    if n > M.config.max_events + 1 then
      vim.api.nvim_buf_set_lines(buf, 1, n - M.config.max_events, false, {})
    end
    vim.api.nvim_buf_set_option(buf, "modifiable", false)
  end
  local topic = ev.topic
  local data = val(ev.data)
  if type(data) ~= "table" then
    data = {}
  end
  if M.config.notify then
    if topic == "breaker.opened" then
      local why = val(data.forced) and ("forced: " .. tostring(val(data.reason)))
        or (tostring(val(data.failures)) .. " failures")
      notify(string.format("breaker %s opened (%s)", tostring(val(data.type)), why), vim.log.levels.WARN)
    elseif topic == "queue.dead-lettered" then
      notify(
        string.format("task %s (%s) dead-lettered: %s", tostring(val(data.id)), tostring(val(data.type)), one_line(val(data.error))),
        vim.log.levels.WARN
      )
    elseif topic == "run.exited" then
      notify(
        string.format("run %s exited with code %s", tostring(val(data.container)), tostring(val(data.exitCode))),
        vim.log.levels.WARN
      )
    end
  end
  if topic ~= "run.log" and topic ~= "image.pull" then
    M.refresh(m.path)
  end
end

--- Follow a project live (idempotent): subscribe to all its events; every (re)subscription
--- re-reads its state, so a reconnect or a resync leaves nothing stale.
function M.watch(path)
  local m = model(path or M.project())
  if not m.sub then
    m.sub = M.client():subscribe({ "*" }, m.path, function(ev)
      on_event(m, ev)
    end, function()
      m.subscribed = (m.subscribed or 0) + 1
      M.refresh(m.path)
    end)
  end
  return m
end

--- For tests and statuslines: the live model of a project.
function M.model(path)
  return projects[path or M.project()]
end

-- -- statusline -------------------------------------------------------------------------------

--- A short string for any statusline: state, pending/running counts, open breakers.
--- e.g. "loki:running p3 r1 !eng"; "" when lokid has not been used in this session.
function M.statusline()
  local path = M.project()
  local m = projects[path]
  if not m then
    return ""
  end
  local st = m.status
  if not st or not client or client.state ~= "connected" then
    return "loki:offline"
  end
  local state = "idle"
  local run = val(st.run)
  if val(st.stopping) then
    state = "stopping"
  elseif val(st.paused) then
    state = "paused"
  elseif type(run) == "table" and val(run.state) then
    state = tostring(val(run.state))
  end
  local q = val(st.queue) or {}
  local s = string.format("loki:%s p%d r%d", state, val(q.pending) or 0, val(q["in-progress"]) or 0)
  local open = {}
  for name, b in pairs(val(st.breakers) or {}) do
    if val(b.state) ~= "closed" then
      table.insert(open, name)
    end
  end
  table.sort(open)
  if #open > 0 then
    s = s .. " !" .. table.concat(open, ",")
  end
  return s
end

-- -- commands ---------------------------------------------------------------------------------

local function report(what)
  return function(e, r)
    if e then
      notify(what .. " failed: " .. err_text(e), vim.log.levels.ERROR)
    else
      notify(what .. ": " .. (type(r) == "table" and vim.json.encode(r) or tostring(r)))
    end
  end
end

local function show_task(path, id)
  M.client():request("queue.get", { project = path, id = id }, function(e, r)
    if e then
      return notify("task " .. id .. ": " .. err_text(e), vim.log.levels.ERROR)
    end
    local buf = scratch("loki://task/" .. id, "lua")
    local lines = { "-- " .. id .. " (" .. tostring(r.state) .. ")" }
    vim.list_extend(lines, vim.split(vim.inspect(r.task), "\n"))
    set_lines(buf, lines)
    show(buf)
  end)
end

local function item_at_cursor(buf)
  local items = buf_items[buf] or {}
  return items[vim.api.nvim_win_get_cursor(0)[1]]
end

local function map(buf, lhs, fn)
  vim.api.nvim_buf_set_keymap(buf, "n", lhs, "", { noremap = true, silent = true, callback = fn })
end

-- <CR> in a list buffer shows the task on that line.
local function map_show_task(buf, path)
  map(buf, "<CR>", function()
    local id = item_at_cursor(buf)
    if id then
      show_task(path, id)
    end
  end)
end

local commands = {}

function commands.status(path)
  local m = M.watch(path)
  local buf = scratch("loki://status/" .. path)
  set_lines(buf, status_lines(m))
  show(buf)
  M.refresh(path)
end

function commands.tasks(path)
  local m = M.watch(path)
  local buf = scratch("loki://tasks/" .. path)
  map_show_task(buf, path)
  render_tasks(m)
  show(buf)
  M.refresh(path)
end

function commands.dlq(path)
  local m = M.watch(path)
  local buf = scratch("loki://dlq/" .. path)
  local function decide(method)
    return function()
      local id = item_at_cursor(buf)
      if not id then
        return
      end
      M.client():request(method, { project = path, id = id, note = "from nvim" }, function(e)
        if e then
          notify(method .. " " .. id .. ": " .. err_text(e), vim.log.levels.ERROR)
        else
          notify((method == "dlq.retry" and "retrying " or "deleted ") .. id)
        end
        M.refresh(path)
      end)
    end
  end
  map(buf, "r", decide("dlq.retry"))
  map(buf, "D", decide("dlq.delete"))
  map_show_task(buf, path)
  render_dlq(m)
  show(buf)
  M.refresh(path)
end

function commands.events(path)
  local m = M.watch(path)
  local buf = scratch("loki://events/" .. path)
  local lines = { "Loki events " .. path .. "   (live)" }
  vim.list_extend(lines, m.events)
  set_lines(buf, lines)
  show(buf)
end

local function signal(name)
  return function(path)
    M.watch(path)
    local c = M.client()
    c:connect(function(cerr)
      if cerr then
        return notify(name .. ": " .. err_text(cerr), vim.log.levels.ERROR)
      end
      local method = "signal." .. name
      if not c:has(method) then
        if name == "stop" and c:has("run.stop") then
          return c:request("run.stop", { project = path }, report("stop"))
        end
        return notify(name .. ": this lokid does not serve " .. method, vim.log.levels.ERROR)
      end
      c:request(method, { project = path }, function(e, r)
        report(name)(e, r)
        M.refresh(path) -- the watcher's event follows too; don't wait for it
      end)
    end)
  end
end

commands.stop = signal("stop")
commands.pause = signal("pause")
commands.resume = signal("resume")

function commands.run(path, args)
  M.watch(path)
  local params = { project = path }
  if #args > 0 then
    params.args = args
  end
  notify("starting a run in " .. path)
  M.client():request("run.start", params, function(e, r)
    if e then
      return notify("run failed: " .. err_text(e), vim.log.levels.ERROR)
    end
    local port = val(r.port)
    notify(
      string.format("run %s started (%s)%s", tostring(r.container), tostring(r.image), port and (" port " .. port) or "")
    )
    M.refresh(path)
  end)
end

M.commands = vim.tbl_keys(commands)
table.sort(M.commands)

--- :Loki {sub} [args]
function M.command(opts)
  local args = vim.split(vim.trim(opts.args or ""), "%s+", { trimempty = true })
  local sub = table.remove(args, 1) or "status"
  local fn = commands[sub]
  if not fn then
    return notify("unknown :Loki " .. sub .. " (one of: " .. table.concat(M.commands, ", ") .. ")", vim.log.levels.ERROR)
  end
  fn(M.project(), args)
end

function M.complete(arglead, cmdline)
  if cmdline:match("^%S+%s+%S+%s") then
    return {}
  end
  return vim.tbl_filter(function(c)
    return c:sub(1, #arglead) == arglead
  end, M.commands)
end

return M
