-- Loki Mode's dashboard on the host, for container runs (as `lokictl run start` does).
-- The container's own dashboard is off (it would see only its project), so after a Start Run
-- this makes sure Loki Mode's dashboard runs on the host, where it lists the run beside every
-- other project: `loki dashboard start --port P` (P is 57374, or $LOKI_DASHBOARD_PORT, or the
-- next free port) starts it and does nothing when it runs already; `loki dashboard url
-- --format json` says where it is. `loki` runs from an argv list (no shell) in its own
-- process group, stdin closed, with a timeout; its output goes to a temporary file and is
-- never shown (a failure says its last line). An editor is not a terminal, so no browser is
-- opened (Loki Mode's rule): the address is said instead.
local config = require("loki.config")

local uv = vim.uv or vim.loop -- vim.uv since Neovim 0.10

local M = {}

M.hint = "no host dashboard: Loki Mode's `loki` CLI is not on PATH (npm install -g loki-mode, "
  .. "or brew tap asklokesh/tap && brew install loki-mode); its dashboard lists this run"

local FIRST_PORT, TRIES = 57374, 50
local QUERY_TIMEOUT_MS = 15000

--- Something holds 127.0.0.1:`port` (a listen there fails).
function M.in_use(port)
  local tcp = uv.new_tcp()
  local ok = tcp:bind("127.0.0.1", port)
  if ok then
    ok = tcp:listen(1, function() end)
  end
  tcp:close()
  return not ok
end

--- 57374 ($LOKI_DASHBOARD_PORT when set), else the next free port, 50 at most; when all are
--- taken, the first (and `loki` says the port is in use).
function M.pick_port()
  local first = tonumber(vim.env.LOKI_DASHBOARD_PORT or "")
  if not first or first < 1 or first > 65535 or first % 1 ~= 0 then
    first = FIRST_PORT
  end
  for port = first, math.min(first + TRIES - 1, 65535) do
    if not M.in_use(port) then
      return port
    end
  end
  return first
end

local function read_lines(path)
  local lines = {}
  local f = io.open(path, "rb")
  if f then
    local text = f:read(1048576) or ""
    f:close()
    for line in text:gsub("\27%[[%d;?]*%a", ""):gmatch("[^\r\n]+") do
      line = vim.trim(line)
      if line ~= "" then
        table.insert(lines, line)
      end
    end
  end
  os.remove(path)
  return lines
end

--- Run `argv`; cb(code, lines) on the main loop, code nil after `timeout_ms` (then its whole
--- process group is killed).
local function run(argv, timeout_ms, cb)
  local out = vim.fn.tempname()
  local fd = uv.fs_open(out, "w", 384)
  local timer = uv.new_timer()
  local handle, pid
  local finished = false
  local function finish(code)
    if finished then
      return
    end
    finished = true
    timer:stop()
    timer:close()
    vim.schedule(function()
      cb(code, read_lines(out))
    end)
  end
  handle, pid = uv.spawn(argv[1], {
    args = vim.list_slice(argv, 2),
    stdio = { nil, fd, fd },
    detached = true, -- its own process group: the dashboard outlives the editor
  }, function(code)
    handle:close() -- only once it exited: a handle closed before is never reaped (a zombie)
    finish(code)
  end)
  uv.fs_close(fd)
  if not handle then
    return finish(127)
  end
  timer:start(timeout_ms, 0, function()
    pcall(uv.kill, -pid, "sigkill")
    finish(nil)
  end)
end

local function url_of(lines)
  for i = #lines, 1, -1 do
    if lines[i]:sub(1, 1) == "{" then
      local ok, found = pcall(vim.fn.json_decode, lines[i])
      local url = ok and type(found) == "table" and found.running == true and found.url
      if type(url) ~= "string" or not url:match("^https?://") then
        return nil
      end
      -- A dashboard bound to every interface is reached on the loopback one.
      return (url:gsub("//0%.0%.0%.0:", "//127.0.0.1:"))
    end
  end
end

local function ask_url(loki, cb)
  run({ loki, "dashboard", "url", "--format", "json" }, QUERY_TIMEOUT_MS, function(code, lines)
    cb(code == 0 and url_of(lines) or nil)
  end)
end

--- Reuse the host dashboard when it runs, else start it; cb({state, url?, message?}) with
--- state "started", "running" (reused), "absent" (no `loki`) or "failed".
function M.ensure(cb)
  local loki = vim.fn.exepath("loki")
  if loki == "" then
    return cb({ state = "absent", message = M.hint })
  end
  ask_url(loki, function(url)
    if url then
      return cb({ state = "running", url = url })
    end
    local port = M.pick_port()
    local timeout_ms = (config.dashboard_timeout or 120) * 1000
    run({ loki, "dashboard", "start", "--port", tostring(port) }, timeout_ms, function(code, lines)
      ask_url(loki, function(started)
        if started then
          return cb({ state = "started", url = started })
        end
        local why
        if code == nil then
          why = string.format("did not finish in %g s and was stopped", timeout_ms / 1000)
        else
          why = "failed (exit " .. code .. ")" .. (lines[#lines] and (": " .. lines[#lines]:sub(1, 200)) or "")
        end
        cb({ state = "failed", message = "`loki dashboard start --port " .. port .. "` " .. why })
      end)
    end)
  end)
end

--- The outcome in words, for a notification.
function M.said(d)
  if d.url then
    local how = d.state == "started" and "started" or "already running"
    return "Loki Mode's dashboard " .. d.url .. " (" .. how .. ") lists this run"
  end
  return d.message
end

return M
