"""Running under a service manager: systemd socket activation and sd_notify, launchd, idle exit.

One module per concept; `supervise` wires them around `Daemon.serve`.
"""
