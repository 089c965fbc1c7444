-- lokid wire protocol v1 (PROTOCOL.md sections 2, 3 and 5): framing and message shapes.
-- Pure Lua over vim.mpack; no I/O, so the tests feed it the shared vectors directly.
local M = {}

local islist = vim.islist or vim.tbl_islist -- vim.islist since Neovim 0.10

M.MAX_FRAME = 16 * 1024 * 1024
M.NIL = vim.NIL

--- nil for msgpack nil (vim.NIL), the value otherwise.
function M.val(x)
  if x == vim.NIL then
    return nil
  end
  return x
end

local function be32(n)
  return string.char(
    math.floor(n / 16777216) % 256,
    math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256,
    n % 256
  )
end

local function read_be32(s, pos)
  local a, b, c, d = s:byte(pos, pos + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

--- One frame: the 4-byte big-endian length, then the msgpack body.
function M.frame(body)
  return be32(#body) .. body
end

--- Params are always a map: an empty Lua table would encode as an array.
local function as_map(t)
  if t == nil or (type(t) == "table" and next(t) == nil) then
    return vim.empty_dict()
  end
  return t
end

function M.request(msgid, method, params)
  return M.frame(vim.mpack.encode({ 0, msgid, method, as_map(params) }))
end

function M.notification(method, params)
  return M.frame(vim.mpack.encode({ 2, method, as_map(params) }))
end

--- A sans-I/O frame decoder. feed(data) returns the whole frame bodies found, and an error
--- {code = "too_large", length, limit} once a header announces more than the limit: frames
--- before it are still returned, and the stream is then poisoned (close the connection).
local Decoder = {}
Decoder.__index = Decoder

function M.decoder(max_frame)
  return setmetatable({ buf = "", limit = max_frame or M.MAX_FRAME, need = nil, err = nil }, Decoder)
end

function Decoder:feed(data)
  local frames = {}
  if self.err then
    return frames, self.err
  end
  local buf = self.buf .. data
  local pos = 1
  while true do
    if self.need == nil then
      if #buf - pos + 1 < 4 then
        break
      end
      local length = read_be32(buf, pos)
      if length > self.limit then
        self.err = { code = "too_large", length = length, limit = self.limit }
        self.buf = ""
        return frames, self.err
      end
      self.need = length
      pos = pos + 4
    end
    if #buf - pos + 1 < self.need then
      break
    end
    frames[#frames + 1] = buf:sub(pos, pos + self.need - 1)
    pos = pos + self.need
    self.need = nil
  end
  self.buf = buf:sub(pos)
  return frames, nil
end

--- Bytes held that do not make a whole frame yet (a header counts 4 once read).
function Decoder:pending()
  return #self.buf + (self.need and 4 or 0)
end

local function is_int(x)
  return type(x) == "number" and x == math.floor(x)
end

local function is_map(x)
  -- vim.mpack marks decoded maps with a metatable; empty arrays and maps both come back
  -- as tables, so a table that is not a list (or is empty) counts as a map.
  return type(x) == "table" and (getmetatable(x) ~= nil or next(x) == nil or not islist(x))
end

local function is_list(x)
  return type(x) == "table" and getmetatable(x) == nil and islist(x)
end

local function len(t)
  -- vim.NIL is a value, so #t counts nils inside arrays.
  return #t
end

local TIME = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"

M.ERROR_CODES = {
  parse_error = true,
  invalid_request = true,
  method_not_found = true,
  invalid_params = true,
  not_found = true,
  conflict = true,
  unavailable = true,
  cancelled = true,
  too_large = true,
  internal = true,
}

--- What PROTOCOL.md says a frame body is: kind, message. kind is one of request, response,
--- error-response, notification, event, invalid (then message is nil).
function M.classify(body)
  local ok, msg = pcall(vim.mpack.decode, body)
  if not ok or not is_list(msg) or len(msg) == 0 then
    return "invalid", nil
  end
  local t = msg[1]
  if t == 0 then
    if len(msg) == 4 and is_int(msg[2]) and type(msg[3]) == "string" and is_map(msg[4]) then
      return "request", msg
    end
  elseif t == 1 then
    if len(msg) ~= 4 or not (is_int(msg[2]) or msg[2] == vim.NIL) then
      return "invalid", nil
    end
    local err = msg[3]
    if err == vim.NIL then
      if msg[2] ~= vim.NIL then
        return "response", msg
      end
    elseif is_map(err) and type(err.code) == "string" and type(err.message) == "string" and msg[4] == vim.NIL then
      return "error-response", msg
    end
  elseif t == 2 then
    if len(msg) == 3 and type(msg[2]) == "string" then
      if msg[2] ~= "event" then
        return "notification", msg
      end
      local ev = msg[3]
      if
        is_map(ev)
        and is_int(ev.sub)
        and is_int(ev.seq)
        and type(ev.topic) == "string"
        and (type(ev.project) == "string" or ev.project == vim.NIL)
        and type(ev.time) == "string"
      then
        return "event", msg
      end
    end
  end
  return "invalid", nil
end

M.TIME_PATTERN = TIME

return M
