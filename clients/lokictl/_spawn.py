"""Start `lokid serve` detached, as watchman's client does when nobody answers."""

import os
import subprocess
import sys
from pathlib import Path

from lokid.paths import state_dir


def spawn_daemon(socket_path: Path) -> int:
    """Start lokid in its own session, its output appended to `<state>/lokid.log`."""
    log_dir = state_dir()
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = log_dir / "lokid.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lokid", "serve", "--socket", os.fspath(socket_path)],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(fd)
    return proc.pid
