-- The :Loki subcommands: each opens a view or asks lokid for something, and says what
-- happened through the view's notifications.
local config = require("loki.config")
local dashboard = require("loki.dashboard")
local model = require("loki.model")
local render = require("loki.render")
local ui = require("loki.ui")

local M = {}

-- Say how request `method` went, in words; then re-read the project (the events that
-- follow would too, but the user should not wait for them).
local function report(method, path, what)
  return function(e, r)
    if e then
      ui.notify(what .. " failed: " .. render.err_text(e), vim.log.levels.ERROR)
    else
      ui.notify(render.result(method, r, path))
    end
    model.refresh(path)
  end
end

local function show_task(path, id)
  model.ask("queue.get", { project = path, id = id }, function(e, r)
    if e then
      return ui.notify("task " .. id .. ": " .. render.err_text(e), vim.log.levels.ERROR)
    end
    local buf = ui.scratch("loki://task/" .. id, "yaml")
    ui.set_lines(buf, render.task_lines(id, r.state, r.task))
    ui.show(buf)
  end)
end

-- <CR> in a list buffer shows the task on that line.
local function map_show_task(buf, path)
  ui.map(buf, "<CR>", function()
    local id = ui.item_at_cursor(buf)
    if id then
      show_task(path, id)
    end
  end)
end

local commands = {}

function commands.status(path)
  local m = model.watch(path, true)
  local buf = ui.buffer("status", path)
  ui.set_lines(buf, render.status_lines(m))
  ui.show(buf)
  model.refresh(path)
end

function commands.tasks(path)
  local m = model.watch(path, true)
  local buf = ui.buffer("tasks", path)
  map_show_task(buf, path)
  ui.draw_list(m, "tasks")
  ui.show(buf)
  model.refresh(path)
end

function commands.dlq(path)
  local m = model.watch(path, true)
  local buf = ui.buffer("dlq", path)
  local function decide(method)
    return function()
      local id = ui.item_at_cursor(buf)
      if not id then
        return
      end
      local params = { project = path, id = id, note = "from nvim" }
      model.ask(method, params, report(method, path, method .. " " .. id))
    end
  end
  ui.map(buf, "r", decide("dlq.retry"))
  ui.map(buf, "D", decide("dlq.delete"))
  map_show_task(buf, path)
  ui.draw_list(m, "dlq")
  ui.show(buf)
  model.refresh(path)
end

function commands.events(path)
  ui.show_events(model.watch(path, true))
end

local function signal(name)
  return function(path)
    model.watch(path, true)
    local c = model.client()
    c:connect(function(cerr)
      if cerr then
        return ui.notify(name .. ": " .. render.err_text(cerr), vim.log.levels.ERROR)
      end
      local method = "signal." .. name
      if not c:has(method) then
        if name == "stop" and c:has("run.stop") then
          return c:request("run.stop", { project = path }, report("run.stop", path, "stop"))
        end
        return ui.notify(name .. ": this lokid does not serve " .. method, vim.log.levels.ERROR)
      end
      c:request(method, { project = path }, report(method, path, name))
    end)
  end
end

commands.stop = signal("stop")
commands.pause = signal("pause")
commands.resume = signal("resume")

function commands.run(path, args)
  model.watch(path, true)
  local params = { project = path }
  if #args > 0 then
    params.args = args
  end
  ui.notify("starting a run in " .. path)
  local said = report("run.start", path, "run")
  model.ask("run.start", params, function(e, r)
    said(e, r)
    if not e and config.dashboard then
      -- The container's dashboard is off: Loki Mode's on the host lists the run.
      dashboard.ensure(function(d)
        ui.notify(dashboard.said(d), d.url and vim.log.levels.INFO or vim.log.levels.WARN)
      end)
    end
  end)
end

M.names = vim.tbl_keys(commands)
table.sort(M.names)

--- Run subcommand `sub` for project `path`.
function M.run(sub, path, args)
  local fn = commands[sub]
  if not fn then
    return ui.notify("unknown :Loki " .. sub .. " (one of: " .. table.concat(M.names, ", ") .. ")", vim.log.levels.ERROR)
  end
  fn(path, args)
end

return M
