-- Headless test cases for the Neovim plugin, run by tests/test_nvim.py:
--   nvim --headless -u NONE --cmd 'set rtp+=clients/nvim' -c 'luafile clients/nvim/tests/run.lua'
-- with LOKI_TEST = the case name. Exits 0 when the case passed, 1 with the reason on stderr.
-- Waits are vim.wait with a predicate and a deadline; nothing sleeps and hopes.
local case = vim.env.LOKI_TEST
local T = {}
local uv = vim.uv or vim.loop

local function log(...)
  io.stderr:write(table.concat(vim.tbl_map(tostring, { ... }), " ") .. "\n")
end

local function deep_eq(a, b, path)
  path = path or "$"
  if type(a) ~= type(b) then
    return false, path .. ": " .. vim.inspect(a) .. " ~= " .. vim.inspect(b)
  end
  if type(a) ~= "table" then
    if a == b then
      return true
    end
    return false, path .. ": " .. vim.inspect(a) .. " ~= " .. vim.inspect(b)
  end
  for k, v in pairs(a) do
    local ok, why = deep_eq(v, b[k], path .. "." .. tostring(k))
    if not ok then
      return false, why
    end
  end
  for k, _ in pairs(b) do
    if a[k] == nil then
      return false, path .. "." .. tostring(k) .. " missing"
    end
  end
  return true
end

local function check(cond, msg)
  if not cond then
    error(msg or "check failed", 2)
  end
end

local function wait(what, pred, ms)
  local ok = vim.wait(ms or 10000, pred, 10)
  if not ok then
    error("timed out waiting for " .. what, 2)
  end
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function hex_decode(h)
  return (h:gsub("..", function(x)
    return string.char(tonumber(x, 16))
  end))
end

-- -- notifications are recorded ----------------------------------------------------------
local notes = {}
vim.notify = function(msg, level)
  table.insert(notes, { msg = msg, level = level })
  log("notify:", msg)
end
local function noted(pattern)
  for _, n in ipairs(notes) do
    if n.msg:find(pattern) then
      return n
    end
  end
end
local function count_noted(pattern)
  local n = 0
  for _, x in ipairs(notes) do
    if x.msg:find(pattern) then
      n = n + 1
    end
  end
  return n
end

local function buf_text(name)
  local buf = vim.fn.bufnr(name)
  if buf == -1 then
    return ""
  end
  return table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), "\n")
end

local function buf_has(name, needle)
  return buf_text(name):find(needle, 1, true) ~= nil
end

-- In buffer `name`'s window, the cursor on the (last) line holding `needle`, then `keys`.
local function press_on(name, needle, keys)
  local buf = vim.fn.bufnr(name)
  vim.api.nvim_set_current_win(vim.fn.bufwinid(buf))
  for i, l in ipairs(vim.api.nvim_buf_get_lines(buf, 0, -1, false)) do
    if l:find(needle, 1, true) then
      vim.api.nvim_win_set_cursor(0, { i, 0 })
    end
  end
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(keys, true, false, true), "x", false)
end

-- lokictl as a job; waits for its exit.
local function lokictl(args)
  local cmd = { vim.env.LOKI_TEST_PYTHON, "-m", "lokictl", "--no-spawn", "--json" }
  vim.list_extend(cmd, args)
  local out, code = {}, nil
  local job = vim.fn.jobstart(cmd, {
    stdout_buffered = true,
    stderr_buffered = true,
    on_stdout = function(_, data)
      out = data
    end,
    on_stderr = function(_, data)
      if #table.concat(data) > 0 then
        log("lokictl stderr:", table.concat(data, "\n"))
      end
    end,
    on_exit = function(_, c)
      code = c
    end,
  })
  check(job > 0, "could not start lokictl")
  wait("lokictl " .. args[1], function()
    return code ~= nil
  end, 20000)
  check(code == 0, "lokictl " .. table.concat(args, " ") .. " exited " .. tostring(code))
  return vim.json.decode(table.concat(out, "\n"))
end

-- A second, independent connection (as another agent would be).
local function call(method, params)
  local c = T.other
  if not c then
    c = require("loki.client").new({ name = "nvim-test" })
    T.other = c
  end
  local done, err, res = false, nil, nil
  c:request(method, params, function(e, r)
    done, err, res = true, e, r
  end)
  wait(method, function()
    return done
  end)
  if err then
    error(method .. ": " .. vim.inspect(err), 2)
  end
  if vim.env.LOKI_TEST_DEBUG then
    log("call", method, vim.inspect(params), "->", vim.inspect(res))
  end
  return res
end

-- -- cases ------------------------------------------------------------------------------------
local cases = {}

function cases.vectors()
  local wire = require("loki.wire")
  local doc = vim.json.decode(read_file(vim.env.LOKI_VECTORS))
  local n = 0
  for _, vec in ipairs(doc.vectors) do
    local d = wire.decoder(vec.max_frame)
    local frames, err = {}, nil
    for _, chunk in ipairs(vec.chunks) do
      local bodies, e = d:feed(hex_decode(chunk))
      for _, body in ipairs(bodies) do
        local kind, msg = wire.classify(body)
        table.insert(frames, { kind = kind, message = msg == nil and vim.NIL or msg })
      end
      if e then
        err = e
        break
      end
    end
    local ok, why = deep_eq(frames, vec.frames)
    check(ok, vec.name .. ": frames " .. tostring(why))
    local expect_err = vec.error ~= vim.NIL and vec.error or nil
    ok, why = deep_eq(err or vim.NIL, expect_err or vim.NIL)
    check(ok, vec.name .. ": error " .. tostring(why))
    if not err then
      check(d:pending() == vec.pending, vec.name .. ": pending " .. d:pending())
    end
    -- What the Lua encoder writes decodes back to the same meaning.
    for _, f in ipairs(vec.frames) do
      if f.kind == "request" then
        local m = f.message
        local again = wire.request(m[2], m[3], m[4])
        local kind, msg = wire.classify(again:sub(5))
        check(kind == "request" and deep_eq(msg, m), vec.name .. ": re-encoded request")
      end
    end
    n = n + 1
  end
  log("vectors:", n)
  check(n >= 20, "too few vectors")
end

function cases.commands()
  local loki = require("loki")
  local P = loki.project()
  check(P == vim.env.LOKI_TEST_PROJECT, "project is the cwd: " .. P)
  -- A .loki project: the statusline follows it by itself, offline until lokid answers.
  check(loki.statusline() == "loki:offline", "statusline before lokid answered: " .. loki.statusline())
  wait("statusline followed with no command", function()
    return loki.statusline() == "loki:idle p0 r0"
  end)

  -- :Loki status
  vim.cmd("Loki status")
  local status = "loki://status/" .. P
  wait("status buffer", function()
    return buf_has(status, "Queue:    pending 0, in-progress 0")
  end)
  check(buf_has(status, "Run:      none"), buf_text(status))
  check(buf_has(status, "Breakers: all closed"), buf_text(status))
  wait("statusline", function()
    return loki.statusline() == "loki:idle p0 r0"
  end)

  -- :Loki tasks refreshes live after lokictl enqueues
  vim.cmd("Loki tasks")
  local tasks = "loki://tasks/" .. P
  wait("tasks buffer", function()
    return buf_has(tasks, "## pending (0)")
  end)
  local added = lokictl({ "queue", "add", "--project", P, "--id", "t-live", "--payload", '{"goal":"ship it"}', "eng" })
  check(added.id == "t-live", vim.inspect(added))
  wait("the enqueued task in the tasks buffer", function()
    return buf_has(tasks, "## pending (1)") and buf_has(tasks, "t-live  eng  p5  ship it")
  end)
  wait("statusline counts", function()
    return loki.statusline() == "loki:idle p1 r0"
  end)
  check(buf_has(status, "pending 1"), "status buffer follows too: " .. buf_text(status))
  call("queue.claim", { project = P, agent = "a1", capabilities = { "eng" } })
  wait("claimed task under in-progress", function()
    return buf_has(tasks, "## in-progress (1)") and buf_has(tasks, "t-live  eng  p5  @a1  ship it")
  end)

  -- <CR> on a task shows it whole, field by field
  press_on(tasks, "t-live", "<CR>")
  local task = "loki://task/t-live"
  wait("task buffer", function()
    return buf_has(task, "\nclaimedBy: a1\n")
  end)
  check(buf_has(task, "# task t-live (in-progress)"), buf_text(task))
  check(buf_has(task, "\npayload:\n  goal: ship it"), buf_text(task))
  check(buf_has(task, "\npriority: 5\n"), buf_text(task))
  check(not buf_has(task, "vim.NIL") and not buf_has(task, "lastError"), "nil fields are left out: " .. buf_text(task))

  -- :Loki events is a live log
  vim.cmd("Loki events")
  local events = "loki://events/" .. P
  check(buf_has(events, "queue.enqueued"), buf_text(events))
  call("queue.enqueue", { project = P, task = { id = "t-2", type = "ops", payload = { goal = "second" } } })
  wait("live event line", function()
    return buf_has(events, 'queue.enqueued {"id":"t-2"') or buf_has(events, "queue.enqueued") and buf_has(events, '"t-2"')
  end)

  -- a dead-lettered task: notification, :Loki dlq, retry with r
  call("queue.enqueue", { project = P, task = { id = "t-dead", type = "qa", maxRetries = 1, payload = { goal = "doomed" } } })
  local claimed = call("queue.claim", { project = P, agent = "a2", capabilities = { "qa" } })
  check(claimed.task.id == "t-dead")
  call("queue.fail", { project = P, id = "t-dead", agent = "a2", error = "boom" })
  wait("dead-letter notification", function()
    return noted("task t%-dead %(qa%) dead%-lettered: boom")
  end)
  vim.cmd("Loki dlq")
  local dlq = "loki://dlq/" .. P
  wait("dlq buffer", function()
    return buf_has(dlq, "t-dead  qa  retries 1  boom")
  end)
  press_on(dlq, "t-dead", "r")
  wait("retried", function()
    return noted("task t%-dead is pending again") and buf_has(dlq, "(none)")
  end)
  wait("retried task pending again", function()
    return buf_has(tasks, "t-dead  qa")
      and call("queue.get", { project = P, id = "t-dead" }).state == "pending"
  end)

  -- dead again, and D deletes it for good
  call("queue.claim", { project = P, agent = "a2", capabilities = { "qa" } })
  call("queue.fail", { project = P, id = "t-dead", agent = "a2", error = "boom again" })
  wait("dead again in the dlq buffer", function()
    return buf_has(dlq, "t-dead  qa  retries 1  boom again")
  end)
  press_on(dlq, "t-dead", "D")
  wait("deleted", function()
    return noted("task t%-dead deleted") and buf_has(dlq, "(none)") and not buf_has(tasks, "t-dead")
  end)

  -- breaker opened: a notification and the statusline marker
  call("breaker.trip", { project = P, type = "ops", reason = "test" })
  wait("breaker notification", function()
    return noted("breaker ops opened")
  end)
  wait("statusline breaker marker", function()
    return loki.statusline():find("!ops", 1, true) ~= nil
  end)
  wait("status buffer breakers", function()
    return buf_has(status, "ops") and buf_has(status, "open")
  end)

  -- :Loki run against an engine that is not there: a clear error, nothing blocks
  vim.cmd("Loki run")
  wait("run error", function()
    return noted("run failed: ")
  end)

  -- pause / resume / stop: through signal.* when lokid serves them
  local c = loki.client()
  if c:has("signal.pause") then
    vim.cmd("Loki pause")
    wait("PAUSE file", function()
      return uv.fs_stat(P .. "/.loki/PAUSE") ~= nil
    end)
    wait("said in words", function()
      return noted("^proj paused %(%.loki/PAUSE written%)$")
    end)
    local ok = vim.wait(5000, function()
      return loki.statusline():find("^loki:paused") ~= nil
    end, 10)
    check(ok, "statusline paused: " .. loki.statusline() .. "\n" .. buf_text(status) .. "\n" .. buf_text(events))
    vim.cmd("Loki resume")
    wait("PAUSE removed", function()
      return uv.fs_stat(P .. "/.loki/PAUSE") == nil
    end)
    vim.cmd("Loki stop")
    wait("STOP file", function()
      return uv.fs_stat(P .. "/.loki/STOP") ~= nil
    end)
    wait("statusline stopping", function()
      return loki.statusline():find("^loki:stopping") ~= nil
    end)
    wait("status buffer state", function()
      return buf_has(status, "State:    STOPPING")
    end)
    log("signals: served")
  else
    vim.cmd("Loki pause")
    wait("pause refused", function()
      return noted("pause: this lokid does not serve signal.pause")
    end)
    log("signals: not served by this lokid")
  end

  vim.cmd("Loki bogus")
  check(noted("unknown :Loki bogus"), "unknown subcommand")
  check(vim.deep_equal(loki.complete("d", "Loki d"), { "dlq" }), "completion")
end

function cases.reconnect()
  local loki = require("loki")
  local P = loki.project()
  vim.cmd("Loki tasks")
  local tasks = "loki://tasks/" .. P
  wait("tasks buffer", function()
    return buf_has(tasks, "## pending (0)")
  end)
  local m = loki.model(P)
  wait("subscribed", function()
    return (m.subscribed or 0) == 1
  end)
  -- Tell pytest to restart lokid, then wait for it to be back and followed again.
  local marker = vim.env.LOKI_TEST_MARKER
  local f = assert(io.open(marker .. ".ready", "w"))
  f:close()
  wait("connection lost", function()
    return noted("lokid connection lost")
  end, 20000)
  wait("offline statusline", function()
    return loki.statusline() == "loki:offline"
  end, 20000)
  wait("reconnected", function()
    return noted("lokid reconnected")
  end, 20000)
  wait("resubscribed", function()
    return m.subscribed == 2
  end)
  lokictl({ "queue", "add", "--project", P, "--id", "t-after", "eng" })
  wait("event after the restart", function()
    return buf_has(tasks, "t-after  eng")
  end)
  -- setup() with another socket follows the same project there.
  loki.setup({ socket = vim.env.LOKID_SOCKET })
  wait("followed again after setup", function()
    return m.subscribed == 3
  end)
  check(count_noted("lokid connection lost") == 1, "said once: " .. vim.inspect(notes))
  check(count_noted("lokid reconnected") == 1, "said once")
  wait("statusline back", function()
    return loki.statusline() == "loki:idle p1 r0"
  end)
end

function cases.recent_events()
  -- Events that happened before the editor looked come from project.status.
  local loki = require("loki")
  local P = loki.project()
  call("queue.enqueue", { project = P, task = { id = "before", type = "eng", payload = { n = 1 } } })
  vim.cmd("Loki events")
  local c = loki.client()
  wait("connected", function()
    return c.state == "connected"
  end)
  if not c:has("project.status") then
    log("project.status not served: skipped")
    return
  end
  wait("earlier event in the log", function()
    return buf_has("loki://events/" .. P, 'queue.enqueued {"id":"before"')
      or buf_has("loki://events/" .. P, '"before"')
  end)
end

function cases.no_daemon()
  -- No lokid, and the start command fails: a command says both and the editor goes on.
  require("loki").setup({ start = { "sh", "-c", "echo cannot start it here >&2; exit 3" } })
  vim.cmd("Loki status")
  local buf = "loki://status/" .. require("loki").project()
  wait("not running message", function()
    return buf_has(buf, "lokid is not running")
  end)
  check(buf_has(buf, "sh exited 3: cannot start it here"), "the start command's failure is shown")
  check(require("loki").statusline() == "loki:offline")
end

function cases.starts_lokid()
  -- No lokid: the first command starts it (lokictl ping spawns it) and then gets its answer.
  require("loki").setup({ start = { vim.env.LOKI_TEST_PYTHON, "-m", "lokictl", "ping" } })
  local c = require("loki").client()
  vim.cmd("Loki status")
  wait("connected to the lokid it started", function()
    return c.state == "connected"
  end, 30000)
  local buf = "loki://status/" .. require("loki").project()
  wait("status from lokid", function()
    return buf_has(buf, require("loki").project())
  end)
  check(not buf_has(buf, "not running"), "no failure shown")
end

-- A stand-in on `path` that hangs up on every connection and counts them: each one is a
-- client's connect attempt.
local function hang_up_server(path)
  local server = { accepts = 0, pipe = uv.new_pipe(false) }
  assert(server.pipe:bind(path))
  server.pipe:listen(16, function()
    local conn = uv.new_pipe(false)
    server.pipe:accept(conn)
    server.accepts = server.accepts + 1
    conn:close()
  end)
  return server
end

local function exists(path)
  return uv.fs_stat(path) ~= nil
end

function cases.no_start_on_reconnect()
  -- As the VS Code client's test: lokid goes away (pytest stops it), a stand-in takes its
  -- socket, and the background reconnects it counts never run the start command, although
  -- connect() was asked again while connected (as every refresh does).
  local marker = vim.env.LOKI_TEST_MARKER
  local started = marker .. ".started"
  local c = require("loki.client").new({ backoff_min = 5, backoff_max = 10, start = { "touch", started } })
  local connected = false
  c:connect(function(e)
    check(e == nil, vim.inspect(e))
    connected = true
  end)
  wait("connected", function()
    return connected
  end)
  c:connect()
  local hangup = hang_up_server(marker .. ".hangup.sock")
  assert(io.open(marker .. ".ready", "w")):close()
  wait("lokid stopped by pytest", function()
    return exists(marker .. ".stopped") and c.state ~= "connected"
  end, 20000)
  assert(os.rename(marker .. ".hangup.sock", c.path))
  wait("five reconnect attempts", function()
    return hangup.accepts >= 5
  end)
  check(not exists(started), "a background reconnect ran the start command")
  c:close()
  hangup.pipe:close()
end

function cases.timer_closed()
  -- Nobody there, but a subscription: the client retries in the background on a timer;
  -- close() frees that libuv handle (a stopped one lives on until it is closed).
  local c = require("loki.client").new({ socket = vim.env.LOKI_TEST_PROJECT .. "/nobody.sock", backoff_min = 5 })
  c:subscribe({ "*" }, nil, function() end)
  wait("a reconnect timer", function()
    return c.timer ~= nil
  end)
  local timer = c.timer
  c:close()
  -- Closing, or closed already (then luv refuses to look at it).
  local ok, closing = pcall(timer.is_closing, timer)
  check(not ok or closing, "the timer was stopped but not closed")
end

-- Loki Mode's host dashboard through the stand-in `loki` (tests/fake_loki on PATH): started,
-- then reused; a hung `loki` stopped after the timeout; no `loki`: the hint.
local function fake_loki_calls()
  local path = vim.env.HOME .. "/.loki/fake-loki-calls.jsonl"
  local calls = {}
  for line in read_file(path):gmatch("[^\n]+") do
    table.insert(calls, vim.fn.json_decode(line))
  end
  return calls
end

function cases.dashboard()
  local dashboard = require("loki.dashboard")
  local config = require("loki.config")
  local port = vim.env.LOKI_DASHBOARD_PORT
  local url = "http://127.0.0.1:" .. port
  local got = {}
  local function ensure()
    local n = #got + 1
    dashboard.ensure(function(d)
      table.insert(got, d)
    end)
    wait("ensure " .. n, function()
      return #got >= n
    end, 30000)
    return got[n]
  end
  local ok, why = deep_eq(ensure(), { state = "started", url = url })
  check(ok, why)
  ok, why = deep_eq(ensure(), { state = "running", url = url })
  check(ok, why)
  check(dashboard.said(got[2]) == "Loki Mode's dashboard " .. url .. " (already running) lists this run")
  local starts = vim.tbl_filter(function(c)
    return c.argv[2] == "start"
  end, fake_loki_calls())
  check(#starts == 1 and starts[1].argv[4] == port, vim.inspect(starts))

  vim.fn.system({ "loki", "dashboard", "stop" })
  vim.env.LOKI_FAKE_HANG = "1"
  config.dashboard_timeout = 1
  local hung = ensure()
  check(hung.state == "failed", vim.inspect(hung))
  check(hung.message == "`loki dashboard start --port " .. port .. "` did not finish in 1 s and was stopped", hung.message)
  local last = fake_loki_calls()[#fake_loki_calls()]
  check(last.argv[2] == "url", vim.inspect(last))
  local hung_start = fake_loki_calls()[#fake_loki_calls() - 1]
  check(hung_start.argv[2] == "start", vim.inspect(hung_start))
  wait("the hung loki gone", function()
    return uv.kill(hung_start.pid, 0) ~= 0
  end)
  vim.env.LOKI_FAKE_HANG = nil

  vim.env.PATH = vim.env.LOKI_TEST_PATH_WITHOUT_LOKI
  ok, why = deep_eq(ensure(), { state = "absent", message = dashboard.hint })
  check(ok, why)
end

-- :Loki run on a real engine: the run starts, then the host dashboard is started and said.
function cases.run_dashboard()
  vim.cmd("Loki run")
  wait("run started", function()
    return noted("^run loki%-%x+ started")
  end, 60000)
  local url = "http://127.0.0.1:" .. vim.env.LOKI_DASHBOARD_PORT
  wait("dashboard said", function()
    return noted("^Loki Mode's dashboard " .. vim.pesc(url) .. " %(started%) lists this run$")
  end, 30000)
end

-- -- run one -------------------------------------------------------------------------------
local fn = cases[case]
if not fn then
  log("no such case: " .. tostring(case))
  vim.cmd("cquit 2")
end
local ok, err = xpcall(fn, debug.traceback)
if T.other then
  T.other:close()
end
if ok then
  log("ok " .. case)
  vim.cmd("qall!")
else
  log("FAILED " .. case .. ": " .. tostring(err))
  vim.cmd("cquit 1")
end
