-- The plugin's settings: one table, shared by every module; setup() merges into it.
return {
  socket = nil, -- nil: $LOKID_SOCKET, then the default path (as lokictl)
  notify = true, -- vim.notify on breaker opened, dead-lettered task, run exited
  max_events = 1000, -- lines kept in the events buffer
  list_limit = 200, -- tasks shown per state in the tasks buffer
  -- Start lokid when a command finds it not running: nil = `lokictl ping` if lokictl is
  -- on PATH (it uses the installed service, else spawns lokid), false = never, or argv.
  start = nil,
  -- :Loki run also starts (or finds running) Loki Mode's dashboard on the host, which lists
  -- the container run (`loki dashboard start`), and says its address; false = never.
  dashboard = true,
  dashboard_timeout = 120, -- seconds `loki dashboard start` may take (a first one installs)
}
