-- Pure renderers: a project's model (model.lua) in, lines and strings out. No buffers, no
-- windows, no requests, so each view can be checked from its data alone.
local wire = require("loki.wire")
local val = wire.val

local M = {}

M.STATES = { "pending", "in-progress", "completed", "dead-letter", "cancelled" }

function M.err_text(err)
  if type(err) == "table" then
    return tostring(err.code) .. ": " .. tostring(err.message)
  end
  return tostring(err)
end

function M.one_line(s)
  s = tostring(s or "")
  return (s:gsub("[\r\n]+", " "))
end

--- A task's title: its own, else the payload's goal, action or target.
function M.task_title(t)
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

--- The status buffer: run, queue counts, breakers, signals, Loki Mode's dashboard.
function M.status_lines(m)
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
  for _, s in ipairs(M.STATES) do
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

-- A list view (`m[kind]` holds its data): a header, then `rows(data, lines, items)` or why
-- there is no data yet. Returns the lines and `items`: line number -> the task id on it.
local function list_lines(m, kind, header, rows)
  local lines = { header, "" }
  local items = {}
  if not m[kind] then
    table.insert(lines, "(" .. (m[kind .. "_err"] or "loading") .. ")")
  else
    rows(m[kind], lines, items)
  end
  return lines, items
end

--- The tasks buffer: every state with its tasks.
function M.tasks_lines(m)
  local header = "Loki tasks " .. m.path .. "   (<CR> shows a task; live)"
  return list_lines(m, "tasks", header, function(tasks, lines, items)
    for _, state in ipairs(M.STATES) do
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
            M.one_line(M.task_title(t))
          )
        )
        items[#lines] = t.id
      end
      table.insert(lines, "")
    end
  end)
end

--- The dead-letter buffer: one line per task with its last error.
function M.dlq_lines(m)
  local header = "Loki dead letters " .. m.path .. "   (r retry, D delete, <CR> show)"
  return list_lines(m, "dlq", header, function(dlq, lines, items)
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
          M.one_line(val(t.lastError) or "")
        )
      )
      items[#lines] = t.id
    end
  end)
end

--- One event as one line of the events log: time, topic, data as JSON.
function M.event_line(ev)
  local data = val(ev.data)
  local text = ""
  if data ~= nil then
    local ok, j = pcall(vim.json.encode, data)
    text = ok and j or vim.inspect(data)
  end
  return string.format("%s %s %s", tostring(ev.time), ev.topic, M.one_line(text))
end

function M.events_header(m)
  return "Loki events " .. m.path .. "   (live)"
end

--- The events buffer: a header, then the log.
function M.events_lines(m)
  local lines = { M.events_header(m) }
  vim.list_extend(lines, m.events)
  return lines
end

--- What the user is told about an event, or nil: (message, vim.log level).
function M.notice(ev)
  local topic = ev.topic
  local data = val(ev.data)
  if type(data) ~= "table" then
    data = {}
  end
  local warn = vim.log.levels.WARN
  if topic == "breaker.opened" then
    local why = val(data.forced) and ("forced: " .. tostring(val(data.reason)))
      or (tostring(val(data.failures)) .. " failures")
    return string.format("breaker %s opened (%s)", tostring(val(data.type)), why), warn
  elseif topic == "queue.dead-lettered" then
    local msg = string.format(
      "task %s (%s) dead-lettered: %s",
      tostring(val(data.id)),
      tostring(val(data.type)),
      M.one_line(val(data.error))
    )
    return msg, warn
  elseif topic == "run.exited" then
    return string.format("run %s exited with code %s", tostring(val(data.container)), tostring(val(data.exitCode))),
      warn
  end
  return nil
end

--- A command's result in words (the reply shapes are PROTOCOL.md's).
function M.result(method, r, path)
  r = type(r) == "table" and r or {}
  local name = vim.fn.fnamemodify(path or "", ":t")
  if method == "signal.pause" then
    return name .. " paused (.loki/PAUSE written)"
  elseif method == "signal.resume" then
    return name .. " resumed"
  elseif method == "signal.stop" then
    return name .. " stopping (.loki/STOP written)"
  elseif method == "run.stop" then
    local names = vim.list_extend(vim.list_extend({}, val(r.stopped) or {}), val(r.removed) or {})
    return #names > 0 and ("stopped " .. table.concat(names, ", ")) or "no run was up in " .. name
  elseif method == "run.start" then
    local port = val(r.port)
    return string.format(
      "run %s started (%s)%s",
      tostring(val(r.container)),
      tostring(val(r.image)),
      port and (" on port " .. port) or ""
    )
  elseif method == "dlq.retry" then
    return "task " .. tostring(val(r.id)) .. " is pending again"
  elseif method == "dlq.delete" then
    return "task " .. tostring(val(r.id)) .. " deleted"
  end
  return method .. ": done"
end

--- The statusline string: "loki:<state> p<pending> r<running> [!<open breakers>]";
--- "" for a project not followed; "loki:offline" without a connection or a status.
function M.statusline(m, connected)
  if not m then
    return ""
  end
  local st = m.status
  if not st or not connected then
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

-- The task fields in the order PROTOCOL.md lists them; others follow by name, payload last.
local TASK_FIELDS = {
  "id",
  "type",
  "priority",
  "claimedBy",
  "claimedAt",
  "createdAt",
  "availableAt",
  "timeout",
  "retries",
  "maxRetries",
  "lastError",
  "dependencies",
  "idempotencyKey",
}

local function is_list(t)
  return vim.tbl_count(t) == #t
end

local function sorted_keys(t)
  local keys = vim.tbl_keys(t)
  table.sort(keys, function(a, b)
    return tostring(a) < tostring(b)
  end)
  return keys
end

-- `key: value` lines, YAML-like, for one value at `indent`; nil values are left out,
-- text with line breaks becomes a block, maps and lists of maps nest.
local function value_lines(out, indent, key, v)
  v = val(v)
  if v == nil then
    return
  end
  local pad = string.rep("  ", indent)
  local head = key and (pad .. key .. ":") or (pad .. "-")
  if type(v) == "string" and v:find("[\r\n]") then
    table.insert(out, head .. " |")
    for _, l in ipairs(vim.split(v, "\r?\n")) do
      table.insert(out, pad .. "  " .. l)
    end
  elseif type(v) ~= "table" then
    table.insert(out, head .. " " .. tostring(v))
  elseif next(v) == nil then
    table.insert(out, head .. " (none)")
  elseif is_list(v) and vim.tbl_isempty(vim.tbl_filter(function(x)
    return type(x) == "table"
  end, v)) then
    table.insert(out, head .. " " .. table.concat(vim.tbl_map(function(x)
      return tostring(val(x))
    end, v), ", "))
  else
    table.insert(out, head)
    if is_list(v) then
      for _, x in ipairs(v) do
        value_lines(out, indent + 1, nil, x)
      end
    else
      for _, k in ipairs(sorted_keys(v)) do
        value_lines(out, indent + 1, tostring(k), v[k])
      end
    end
  end
end

--- The task view: one task whole, field by field (YAML-like), its state in the title.
function M.task_lines(id, state, task)
  local lines = { "# task " .. id .. " (" .. tostring(val(state)) .. ")", "" }
  task = type(task) == "table" and task or {}
  local seen = { payload = true }
  for _, k in ipairs(TASK_FIELDS) do
    seen[k] = true
    value_lines(lines, 0, k, task[k])
  end
  for _, k in ipairs(sorted_keys(task)) do
    if not seen[k] then
      value_lines(lines, 0, tostring(k), task[k])
    end
  end
  value_lines(lines, 0, "payload", task.payload)
  return lines
end

return M
