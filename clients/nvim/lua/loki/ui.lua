-- The view: scratch buffers named loki://<kind>/<project>, drawn from the model with the
-- pure renderers, statuslines redrawn and notifications shown when the model changes.
local config = require("loki.config")
local render = require("loki.render")

local M = {}

local buf_items = {} -- bufnr -> {line -> task id}
local said_lost = false

function M.notify(msg, level)
  vim.notify(msg, level or vim.log.levels.INFO, { title = "loki" })
end

-- Buffer options through vim.bo[buf], which Neovim 0.7 and today's both have (the
-- per-buffer option functions are deprecated since 0.10; nvim_set_option_value came in 0.8).
function M.scratch(name, filetype)
  local buf = vim.fn.bufnr(name)
  if buf == -1 or not vim.api.nvim_buf_is_valid(buf) then
    buf = vim.api.nvim_create_buf(true, true)
    vim.api.nvim_buf_set_name(buf, name)
    local bo = vim.bo[buf]
    bo.buftype = "nofile"
    bo.bufhidden = "hide"
    bo.swapfile = false
    bo.filetype = filetype or "loki"
    bo.modifiable = false
  end
  return buf
end

--- The buffer of view `kind` for `path` (made when missing).
function M.buffer(kind, path, filetype)
  return M.scratch("loki://" .. kind .. "/" .. path, filetype)
end

--- Show `buf`: jump to its window, or split one for it.
function M.show(buf)
  local win = vim.fn.bufwinid(buf)
  if win == -1 then
    vim.cmd("split")
    vim.api.nvim_win_set_buf(0, buf)
  else
    vim.api.nvim_set_current_win(win)
  end
end

-- Change a read-only buffer: `fn(buf)` runs with it modifiable.
local function edit(buf, fn)
  vim.bo[buf].modifiable = true
  fn(buf)
  vim.bo[buf].modifiable = false
end

function M.set_lines(buf, lines)
  if not vim.api.nvim_buf_is_valid(buf) then
    return
  end
  edit(buf, function()
    vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  end)
end

-- The windows showing `buf` whose cursor is on its last line: they follow what is added.
local function at_end(buf)
  local last = vim.api.nvim_buf_line_count(buf)
  return vim.tbl_filter(function(win)
    return vim.api.nvim_win_get_cursor(win)[1] >= last
  end, vim.fn.win_findbuf(buf))
end

local function follow(buf, wins)
  local last = vim.api.nvim_buf_line_count(buf)
  for _, win in ipairs(wins) do
    if vim.api.nvim_win_is_valid(win) then
      vim.api.nvim_win_set_cursor(win, { last, 0 })
    end
  end
end

--- The open buffer of view `kind` for `path`, or nil.
function M.buf_for(kind, path)
  local buf = vim.fn.bufnr("loki://" .. kind .. "/" .. path)
  if buf ~= -1 and vim.api.nvim_buf_is_valid(buf) then
    return buf
  end
  return nil
end

function M.item_at_cursor(buf)
  local items = buf_items[buf] or {}
  return items[vim.api.nvim_win_get_cursor(0)[1]]
end

function M.map(buf, lhs, fn)
  vim.api.nvim_buf_set_keymap(buf, "n", lhs, "", { noremap = true, silent = true, callback = fn })
end

-- -- drawing ------------------------------------------------------------------------------

local lists = { tasks = render.tasks_lines, dlq = render.dlq_lines }

--- Draw list `kind` ("tasks", "dlq") of model `m` into its buffer, if open.
function M.draw_list(m, kind)
  local buf = M.buf_for(kind, m.path)
  if not buf then
    return
  end
  local lines, items = lists[kind](m)
  buf_items[buf] = items
  M.set_lines(buf, lines)
end

function M.draw_status(m)
  local buf = M.buf_for("status", m.path)
  if buf then
    M.set_lines(buf, render.status_lines(m))
  end
end

--- Draw the events log; a window whose cursor was on the last line stays on it (a tail).
function M.draw_events(m)
  local buf = M.buf_for("events", m.path)
  if buf then
    local wins = at_end(buf)
    M.set_lines(buf, render.events_lines(m))
    follow(buf, wins)
  end
end

--- Open the events log with the cursor on its newest line, so the window follows it.
function M.show_events(m)
  local buf = M.buffer("events", m.path)
  M.set_lines(buf, render.events_lines(m))
  M.show(buf)
  follow(buf, { vim.api.nvim_get_current_win() })
end

local function append_event(m, line)
  local buf = M.buf_for("events", m.path)
  if not buf then
    return
  end
  local wins = at_end(buf)
  edit(buf, function()
    vim.api.nvim_buf_set_lines(buf, -1, -1, false, { line })
    local n = vim.api.nvim_buf_line_count(buf)
    if n > config.max_events + 1 then
      vim.api.nvim_buf_set_lines(buf, 1, n - config.max_events, false, {})
    end
  end)
  follow(buf, wins)
end

--- Every window's statusline: each may show loki's state (`redrawstatus` alone redraws
--- only the current window's).
function M.redraw_statuslines()
  vim.cmd("redrawstatus!")
end

-- -- the model's news ---------------------------------------------------------------------

local function connection_changed(what, info)
  if what == "lost" then
    if not said_lost then
      said_lost = true
      M.notify("lokid connection lost (" .. info.message .. "); reconnecting", vim.log.levels.WARN)
    end
    M.redraw_statuslines()
  elseif what == "back" and said_lost then
    said_lost = false
    M.notify("lokid reconnected")
  end
end

--- The view the model talks to (model.set_view).
M.view = {
  changed = function(m, what, arg)
    if not m then
      return connection_changed(what, arg)
    end
    if what == "status" then
      M.draw_status(m)
      M.redraw_statuslines()
    elseif what == "tasks" or what == "dlq" then
      M.draw_list(m, what)
    elseif what == "events" then
      M.draw_events(m)
    elseif what == "event" then
      append_event(m, arg.line)
      if config.notify then
        local msg, level = render.notice(arg.event)
        if msg then
          M.notify(msg, level)
        end
      end
    end
  end,
  wants = function(m, kind)
    return M.buf_for(kind, m.path) ~= nil
  end,
}

return M
