"""Loki Mode's dashboard on the host, for container runs (Loki Mode's FEAT-DOCKER-DASH plan).

A dashboard inside the container would see only its own project, so lokid runs every
container with its dashboard off and no published port, and `lokictl run start` makes sure
Loki Mode's own dashboard runs on the host: it lists every project of its registry
(`~/.loki/dashboard/projects.json`), local runs and container runs alike. It is started with
Loki Mode's CLI, as its `loki docker start` does: `loki dashboard start --port P`, where P is
57374 (or $LOKI_DASHBOARD_PORT) or the next free port, and which does nothing when the
dashboard already runs; `loki dashboard url --format json` says where it is.

lokictl does this, not lokid: lokid often runs as a service, with the service manager's
environment (no npm or Homebrew folders on PATH, no display) and would make the dashboard
its child; the user's PATH, terminal and browser are where lokictl runs.

`loki` runs from an argv list, never a shell, with stdin closed and a timeout; what it prints
goes to a temporary file, never to the terminal (a failure shows its last line).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence

import msgspec

from lokid.domain.containers import DASHBOARD_PORT, dashboard_ports

START_TIMEOUT = 120.0  # seconds: a first start may install the dashboard's Python packages
QUERY_TIMEOUT = 15.0
# Loki Mode's background flags for `start` (its `loki docker` checks the same ones).
BACKGROUND = frozenset({"--bg", "--background", "--detach", "-d"})
HINT = (
    "no host dashboard: Loki Mode's `loki` CLI is not on PATH (npm install -g loki-mode, "
    "or brew tap asklokesh/tap && brew install loki-mode); its dashboard lists this run"
)
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Dashboard(msgspec.Struct, omit_defaults=True):
    """What became of the host dashboard: `state` is `started`, `running` (it was already
    up and is reused), `absent` (no `loki` CLI) or `failed`; `message` says why for the last
    two."""

    state: str
    url: str | None = None
    opened: bool = False
    message: str | None = None


def ensure(env: Mapping[str, str] | None = None, timeout: float | None = None) -> Dashboard:
    """Reuse Loki Mode's host dashboard when it runs, else start it."""
    env = os.environ if env is None else env
    loki = shutil.which("loki", path=env.get("PATH", os.defpath))
    if loki is None:
        return Dashboard("absent", message=HINT)
    url = _url(loki, env)
    if url:
        return Dashboard("running", url)
    port = pick_port(env)
    argv = [loki, "dashboard", "start", "--port", str(port)]
    limit = START_TIMEOUT if timeout is None else timeout
    code, lines = _run(argv, env, limit)
    last = lines[-1][:200] if lines else ""
    url = _url(loki, env)
    if url:
        return Dashboard("started", url)
    if code is None:
        why = f"did not finish in {limit:g} s and was stopped"
    else:
        why = f"failed (exit {code})" + (f": {last}" if last else "")
    return Dashboard("failed", message=f"`loki dashboard start --port {port}` {why}")


def pick_port(env: Mapping[str, str]) -> int:
    """57374 ($LOKI_DASHBOARD_PORT when set), else the next port nothing holds, 50 at most
    (as Loki Mode's `loki_docker_pick_host_port`); when all are taken, the first."""
    first = env.get("LOKI_DASHBOARD_PORT", "")
    start = int(first) if first.isdigit() and 0 < int(first) < 65536 else DASHBOARD_PORT
    for port in dashboard_ports(start):
        if port < 65536 and not in_use(port):
            return port
    return start


def in_use(port: int) -> bool:
    """Something answers on 127.0.0.1:`port`, or the port cannot be bound there."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return True
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _url(loki: str, env: Mapping[str, str]) -> str | None:
    """The running dashboard's address from `loki dashboard url --format json`, else None."""
    code, lines = _run([loki, "dashboard", "url", "--format", "json"], env, QUERY_TIMEOUT)
    if code != 0:
        return None
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except ValueError:
                return None
            url = found.get("url") if isinstance(found, dict) and found.get("running") else None
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                return None
            # A dashboard bound to every interface is reached on the loopback one.
            return re.sub(r"//(0\.0\.0\.0|\[::\]|::)(?=:)", "//127.0.0.1", url)
    return None


def _run(
    argv: Sequence[str], env: Mapping[str, str], timeout: float
) -> tuple[int | None, list[str]]:
    """Run `argv` (its own process group, stdin closed, output to a temporary file); its exit
    code (None after the timeout, when the whole group is killed) and its output's lines."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,  # its dashboard outlives this terminal; a timeout ends all
        )
        code: int | None = None
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:  # the timeout, or ^C
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.seek(0)
        text = _ESCAPES.sub("", out.read(1 << 20).decode(errors="replace"))
    return code, [line.strip() for line in text.splitlines() if line.strip()]


def wants_browser(loki_args: Sequence[str], env: Mapping[str, str]) -> bool:
    """Loki Mode's rule for opening its dashboard: stdout is a terminal, the run is not in
    the background, and LOKI_NO_AUTO_OPEN is not 1."""
    return (
        sys.stdout.isatty()
        and not BACKGROUND.intersection(loki_args)
        and env.get("LOKI_NO_AUTO_OPEN", "0") != "1"
    )


def open_browser(url: str, env: Mapping[str, str] | None = None) -> bool:
    """Open `url` with Python's `webbrowser` ($BROWSER first, else the desktop's opener).
    Without $BROWSER on a Unix with no display (an SSH session) nothing is opened: the only
    browsers there are text ones, which would take over this terminal."""
    env = os.environ if env is None else env
    graphical = sys.platform in ("darwin", "win32") or any(
        env.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY")
    )
    if not (graphical or env.get("BROWSER")):
        return False
    import webbrowser

    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False
