-- :Loki status|tasks|stop|pause|resume|run|events|dlq (lokid over its unix socket)
if vim.g.loaded_loki then
  return
end
vim.g.loaded_loki = true

vim.api.nvim_create_user_command("Loki", function(opts)
  require("loki").command(opts)
end, {
  nargs = "*",
  complete = function(arglead, cmdline)
    return require("loki").complete(arglead, cmdline)
  end,
  desc = "Loki Mode via lokid",
})
