-- The :Loki subcommands: each opens a view or asks lokid for something, and says what
-- happened through the view's notifications.
local model = require("loki.model")
local render = require("loki.render")
local ui = require("loki.ui")
local wire = require("loki.wire")
local val = wire.val

local M = {}

local function report(what)
  return function(e, r)
    if e then
      ui.notify(what .. " failed: " .. render.err_text(e), vim.log.levels.ERROR)
    else
      ui.notify(what .. ": " .. (type(r) == "table" and vim.json.encode(r) or tostring(r)))
    end
  end
end

local function show_task(path, id)
  model.client():request("queue.get", { project = path, id = id }, function(e, r)
    if e then
      return ui.notify("task " .. id .. ": " .. render.err_text(e), vim.log.levels.ERROR)
    end
    local buf = ui.scratch("loki://task/" .. id, "lua")
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
  local m = model.watch(path)
  local buf = ui.buffer("status", path)
  ui.set_lines(buf, render.status_lines(m))
  ui.show(buf)
  model.refresh(path)
end

function commands.tasks(path)
  local m = model.watch(path)
  local buf = ui.buffer("tasks", path)
  map_show_task(buf, path)
  ui.draw_list(m, "tasks")
  ui.show(buf)
  model.refresh(path)
end

function commands.dlq(path)
  local m = model.watch(path)
  local buf = ui.buffer("dlq", path)
  local function decide(method)
    return function()
      local id = ui.item_at_cursor(buf)
      if not id then
        return
      end
      model.client():request(method, { project = path, id = id, note = "from nvim" }, function(e)
        if e then
          ui.notify(method .. " " .. id .. ": " .. render.err_text(e), vim.log.levels.ERROR)
        else
          ui.notify((method == "dlq.retry" and "retrying " or "deleted ") .. id)
        end
        model.refresh(path)
      end)
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
  local m = model.watch(path)
  local buf = ui.buffer("events", path)
  ui.set_lines(buf, render.events_lines(m))
  ui.show(buf)
end

local function signal(name)
  return function(path)
    model.watch(path)
    local c = model.client()
    c:connect(function(cerr)
      if cerr then
        return ui.notify(name .. ": " .. render.err_text(cerr), vim.log.levels.ERROR)
      end
      local method = "signal." .. name
      if not c:has(method) then
        if name == "stop" and c:has("run.stop") then
          return c:request("run.stop", { project = path }, report("stop"))
        end
        return ui.notify(name .. ": this lokid does not serve " .. method, vim.log.levels.ERROR)
      end
      c:request(method, { project = path }, function(e, r)
        report(name)(e, r)
        model.refresh(path) -- the watcher's event follows too; don't wait for it
      end)
    end)
  end
end

commands.stop = signal("stop")
commands.pause = signal("pause")
commands.resume = signal("resume")

function commands.run(path, args)
  model.watch(path)
  local params = { project = path }
  if #args > 0 then
    params.args = args
  end
  ui.notify("starting a run in " .. path)
  model.client():request("run.start", params, function(e, r)
    if e then
      return ui.notify("run failed: " .. render.err_text(e), vim.log.levels.ERROR)
    end
    local port = val(r.port)
    ui.notify(
      string.format("run %s started (%s)%s", tostring(r.container), tostring(r.image), port and (" port " .. port) or "")
    )
    model.refresh(path)
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
