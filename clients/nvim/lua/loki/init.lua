-- Loki Mode in Neovim, live over lokid's socket. Project = the current working directory.
-- The parts: client.lua (the connection), model.lua (what each project looks like now),
-- render.lua (pure: model to lines), ui.lua (buffers, statuslines, notifications) and
-- commands.lua (:Loki). This module is the public face that ties them together.
local commands = require("loki.commands")
local config = require("loki.config")
local model = require("loki.model")
local render = require("loki.render")
local ui = require("loki.ui")

local uv = vim.uv or vim.loop -- vim.uv since Neovim 0.10

local M = {}

M.config = config
M.STATES = render.STATES
M.commands = commands.names

model.set_view(ui.view)

function M.setup(opts)
  for k, v in pairs(opts or {}) do
    config[k] = v
  end
  -- A new socket: drop the old connection and follow the same projects on the new one.
  model.reset()
end

--- The project: the logical $PWD when it is the current directory (as lokictl sends it),
--- else Neovim's working directory; absolute, without a trailing slash.
function M.project()
  local cwd = vim.fn.getcwd()
  local pwd = vim.env.PWD
  if pwd and pwd ~= "" and pwd ~= cwd and uv.fs_realpath(pwd) == uv.fs_realpath(cwd) then
    cwd = pwd
  end
  if #cwd > 1 then
    cwd = cwd:gsub("/+$", "")
  end
  return cwd
end

function M.client()
  return model.client()
end

--- Follow a project live (idempotent; in the background: it never starts lokid).
function M.watch(path)
  return model.watch(path or M.project())
end

--- Re-read the project's state; calls made while a refresh is running fold into one more.
function M.refresh(path)
  model.refresh(path or M.project())
end

--- For tests and statuslines: the live model of a project.
function M.model(path)
  return model.find(path or M.project())
end

local function has_loki(path)
  local st = uv.fs_stat(path .. "/.loki")
  return st ~= nil and st.type == "directory"
end

--- A short string for any statusline: state, pending/running counts, open breakers.
--- e.g. "loki:running p3 r1 !eng"; "" outside a Loki Mode project (no `.loki/` folder and
--- no :Loki command yet). The first call in a project follows it: the connection is made
--- in the background (it never starts lokid) and the statuslines are redrawn when the
--- state arrives; "loki:offline" until then.
function M.statusline()
  local path = M.project()
  local m = model.find(path)
  if not m then
    if not has_loki(path) then
      return ""
    end
    local ok, followed = pcall(model.watch, path)
    if not ok then
      return "loki:offline"
    end
    m = followed
  end
  return render.statusline(m, model.connected())
end

--- :Loki {sub} [args]
function M.command(opts)
  local args = vim.split(vim.trim(opts.args or ""), "%s+", { trimempty = true })
  local sub = table.remove(args, 1) or "status"
  commands.run(sub, M.project(), args)
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
