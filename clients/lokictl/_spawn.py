"""Start lokid when nobody answers: through its installed socket unit, else detached
(`lokid serve` in its own session, as watchman's client does)."""

import os
import subprocess
import sys
from pathlib import Path

from lokid.paths import (
    SYSTEMD_SOCKET_UNIT,
    launchd_plist_path,
    state_dir,
    systemd_socket_path,
    systemd_user_dir,
)


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


def service_start_command(socket_path: Path) -> list[str] | None:
    """The command that starts lokid's installed socket unit, if one listens on `socket_path`."""
    if sys.platform == "darwin":
        plist = launchd_plist_path()
        if plist.exists() and _plist_socket(plist) == socket_path:
            return ["launchctl", "bootstrap", f"gui/{os.getuid()}", os.fspath(plist)]
        return None
    unit = systemd_user_dir() / SYSTEMD_SOCKET_UNIT
    if unit.exists() and systemd_socket_path() == socket_path:
        return ["systemctl", "--user", "start", SYSTEMD_SOCKET_UNIT]
    return None


def _plist_socket(plist: Path) -> Path | None:
    import plistlib

    try:
        with plist.open("rb") as f:
            return Path(plistlib.load(f)["Sockets"]["lokid"]["SockPathName"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def start_service(socket_path: Path, timeout: float = 10.0) -> bool:
    """Ask the service manager to listen again (it then starts lokid on our connect).

    Preferred over spawning: a lokid we spawn would take the unit's path from it.
    """
    cmd = service_start_command(socket_path)
    if cmd is None:
        return False
    try:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
