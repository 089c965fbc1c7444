"""Test support for running lokid under a real service manager stand-in.

`systemd-socket-activate` (Debian's systemd package) binds the socket, waits for
the first connection, then execs lokid with `LISTEN_PID`/`LISTEN_FDS` exactly as
systemd does; it passes only TERM, PATH, USER, HOME and the `-E` variables on.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from support import Lokid, wait_until

ACTIVATE = shutil.which("systemd-socket-activate")


class Activated(Lokid):
    """`systemd-socket-activate -l SOCKET --fdname=lokid python -m lokid serve ARGS`.

    A `Lokid` whose process is the activator until it execs lokid on the first connection.
    """

    def __init__(
        self,
        root: Path,
        *args: str,
        env: dict[str, str] | None = None,
        socket: Path | None = None,
    ) -> None:
        self.root = root
        self.socket = socket or root / "run" / "lokid.sock"
        self.log_path = root / "activate.log"
        self.args = args
        self.env = {"XDG_STATE_HOME": str(root / "state"), "LOKID_LOG_LEVEL": "debug"}
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def cmd(self) -> list[str]:
        assert ACTIVATE is not None
        setenv = [f"--setenv={k}={v}" for k, v in self.env.items()]
        serve = [sys.executable, "-m", "lokid", "serve", *self.args]
        return [ACTIVATE, "--listen", str(self.socket), "--fdname=lokid", *setenv, *serve]

    def start(self) -> Activated:
        """Start listening; lokid itself starts on the first connection."""
        self.socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_until(lambda: "Listening on" in self.log(), 10, "systemd-socket-activate to listen")
        return self

    def is_lokid(self) -> bool:
        """True once systemd-socket-activate has exec'd lokid (same pid)."""
        assert self.proc is not None
        try:
            argv = Path(f"/proc/{self.proc.pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return False
        return not argv[0].endswith(b"systemd-socket-activate") and b"lokid" in argv
