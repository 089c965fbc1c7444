"""The user's side of Loki Mode's host dashboard in tests: the stand-in `loki` CLI and
browser in tests/fake_loki, a free dashboard port, a PATH without a real `loki`, and the
end of the dashboard the fake started (by the pid it recorded)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
from pathlib import Path

FAKES = Path(__file__).resolve().parent / "fake_loki"


def free_pair() -> int:
    """A port p such that p and p + 1 are free on 127.0.0.1 (never 57374's range in use)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65535 and all(_free(p) for p in (port, port + 1)):
            return port
    raise AssertionError("no two free ports in a row")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def path_without_loki() -> str:
    """This machine's PATH less any folder with a real `loki` in it."""
    dirs = os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    return os.pathsep.join(d for d in dirs if not shutil.which("loki", path=d))


def path_with_fake_loki() -> str:
    return f"{FAKES}{os.pathsep}{path_without_loki()}"


def stop_dashboard(home: Path) -> None:
    """End the dashboard server the fake `loki` started under `home`, if any."""
    pid_file = home / ".loki" / "dashboard" / "dashboard.pid"
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
