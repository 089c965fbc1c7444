"""Running the real `lokictl` as a user does: in a subprocess from a folder, with a pipe
or a pseudo-terminal for its output (where what a person sees differs from a script)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from support import Lokid

LOKICTL = [sys.executable, "-m", "lokictl"]


def user_env(lokid: Lokid, cwd: Path, home: Path, **extra: str) -> dict[str, str]:
    """lokictl's environment: lokid's socket, the logical $PWD, a private $HOME, no
    spawning unless a test asks, and no colour settings inherited from the caller."""
    env = {**os.environ, "LOKID_SOCKET": str(lokid.socket), "PWD": str(cwd), "HOME": str(home)}
    for name in ("NO_COLOR", "LOKICTL_NO_SPAWN", "LOKICTL_TIMEOUT", "TERM"):
        env.pop(name, None)
    env["LOKICTL_NO_SPAWN"] = "1"
    env.update(extra)
    return env


def run(
    lokid: Lokid, cwd: Path, home: Path, *args: str, stdin: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LOKICTL, *args],
        env=user_env(lokid, cwd, home, **extra),
        cwd=cwd,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def in_pty(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> tuple[int, str]:
    """Run `argv` with stdin, stdout and stderr on a pseudo-terminal; its exit code and
    everything it wrote there (escape sequences included)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40", **env},
        cwd=cwd,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"{argv} still running after {timeout}s: {chunks!r}")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(10), b"".join(chunks).decode(errors="replace")


def run_pty(lokid: Lokid, cwd: Path, home: Path, *args: str, **extra: str) -> tuple[int, str]:
    return in_pty([*LOKICTL, *args], user_env(lokid, cwd, home, **extra), cwd)
