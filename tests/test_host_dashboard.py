"""Loki Mode's dashboard on the host for container runs (its plan's FEAT-DOCKER-DASH, AC8-AC11):
the real lokictl, in a pseudo-terminal or a pipe, against a real lokid and Docker engine.

Loki Mode's `loki` CLI cannot run here, so tests/fake_loki/loki stands in for it: its
`dashboard start|url|stop` keep Loki Mode's state files, start a real server on the port,
are idempotent, record every call, and the server lists the registry as Loki Mode's dashboard
does (/api/running-projects). BROWSER points at a script that records what it was asked to
open. Each test's dashboard port starts from a free one ($LOKI_DASHBOARD_PORT), not 57374,
so parallel test sessions on this machine never meet.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from clisupport import LOKICTL, in_pty, user_env
from dockerenv import DockerEnv, spawn
from hostdash import FAKES, free_pair, path_with_fake_loki, path_without_loki, stop_dashboard

from support import Lokid, wait_until

pytestmark = pytest.mark.docker

PLAIN = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
URL_CALL = ["dashboard", "url", "--format", "json"]


class Host:
    """The user's side: HOME (shared with lokid, so one registry), PATH with the fake
    `loki`, the recording browser, and the dashboard it started (stopped at the end)."""

    def __init__(self, lokid: Lokid, root: Path) -> None:
        self.lokid = lokid
        self.home = root / "home"
        self.browser_log = root / "browser.log"
        self.port = free_pair()

    def env(self, cwd: Path, **extra: str) -> dict[str, str]:
        env = user_env(
            self.lokid,
            cwd,
            self.home,
            PATH=path_with_fake_loki(),
            BROWSER=str(FAKES / "browser"),
            FAKE_BROWSER_LOG=str(self.browser_log),
            LOKI_DASHBOARD_PORT=str(self.port),
            LOKI_FAKE_NOISE="300",
        )
        for name in ("LOKI_NO_AUTO_OPEN", "DISPLAY", "WAYLAND_DISPLAY"):
            env.pop(name, None)
        return {**env, **extra}

    def pty(self, cwd: Path, *args: str, **extra: str) -> tuple[int, str]:
        code, screen = in_pty([*LOKICTL, *args], self.env(cwd, **extra), cwd, timeout=120)
        return code, PLAIN.sub("", screen)

    def piped(self, cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LOKICTL, *args],
            env=self.env(cwd, **extra),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def calls(self) -> list[list[str]]:
        log = self.home / ".loki" / "fake-loki-calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line)["argv"] for line in log.read_text().splitlines()]

    def call_pids(self) -> list[int]:
        log = self.home / ".loki" / "fake-loki-calls.jsonl"
        return [json.loads(line)["pid"] for line in log.read_text().splitlines()]

    def opened(self) -> list[str]:
        return self.browser_log.read_text().split() if self.browser_log.exists() else []

    def get(self, port: int, route: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def listed(self, port: int) -> dict[str, bool]:
        """Loki Mode's dashboard's project switcher: each listed folder, and whether it runs."""
        status, body = self.get(port, "/api/running-projects")
        assert status == 200
        return {p["path"]: p["running"] for p in body["projects"]}

    def stop_dashboard(self) -> None:
        stop_dashboard(self.home)


@pytest.fixture
def host(engine: DockerEnv, tmp_short: Path):
    lokid = spawn(engine, tmp_short)
    user = Host(lokid, tmp_short)
    yield user
    user.stop_dashboard()
    lokid.kill()


def folder(root: Path, name: str) -> Path:
    path = root / name
    (path / ".loki").mkdir(parents=True)
    return path


def sha12(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:12]


def register_local_run(home: Path, path: Path) -> None:
    """A local `loki start` of `path`, registered as its run.sh does: its own live pid."""
    registry = home / ".loki" / "dashboard" / "projects.json"
    registry.parent.mkdir(parents=True, exist_ok=True)
    now = "2026-11-30T10:00:00+00:00"
    entry = {
        "id": sha12(path),
        "path": str(path),
        "name": path.name,
        "alias": None,
        "registered_at": now,
        "updated_at": now,
        "last_accessed": None,
        "has_loki_dir": True,
        "status": "running",
        "pid": os.getpid(),
        "port": 57374,
    }
    registry.write_text(json.dumps({"version": "1.0", "projects": {entry["id"]: entry}}))


def test_a_terminal_start_starts_and_opens_the_dashboard_which_lists_every_run(
    engine: DockerEnv, host: Host, tmp_short: Path
) -> None:
    """AC8: `run start` on a terminal starts the host dashboard and opens it; AC11: a second
    start reuses it; AC9: it lists both container runs beside a local run, as running."""
    engine.publish()
    a, b, local = folder(tmp_short, "a"), folder(tmp_short, "b"), folder(tmp_short, "local")
    register_local_run(host.home, local)
    url = f"http://127.0.0.1:{host.port}"

    code, screen = host.pty(a, "run", "start")
    assert code == 0, screen
    assert re.search(
        rf"started loki-{sha12(a)} \(.*\)\r?\ndashboard {url} \(started, opened\)", screen
    )
    assert "noise line" not in screen and "Dashboard (live run monitor)" not in screen
    assert host.calls() == [URL_CALL, ["dashboard", "start", "--port", str(host.port)], URL_CALL]
    assert host.opened() == [url]

    code, screen = host.pty(b, "run", "start")
    assert code == 0, screen
    assert f"dashboard {url} (already running, opened)" in screen
    assert host.calls()[3:] == [URL_CALL], "reused: no second `dashboard start`"
    assert host.opened() == [url, url]

    assert host.listed(host.port) == {str(a): True, str(b): True, str(local): True}
    status, projects = host.get(host.port, "/api/registry/projects?include_inactive=true")
    assert status == 200, projects
    assert {p["path"] for p in projects} == {str(a), str(b), str(local)}

    code, screen = host.pty(a, "run", "stop")
    assert code == 0, screen
    assert host.listed(host.port) == {str(a): False, str(b): True, str(local): True}


def test_no_browser_in_a_pipe_when_opted_out_or_in_the_background(
    engine: DockerEnv, host: Host, tmp_short: Path
) -> None:
    """AC10: the dashboard is started (on the next port when the first is taken) or reused,
    but no browser opens when stdout is not a terminal, with LOKI_NO_AUTO_OPEN=1, or for a
    run in the background."""
    engine.publish()
    a, b, c, d = (folder(tmp_short, n) for n in "abcd")
    url = f"http://127.0.0.1:{host.port + 1}"
    with socket.socket() as holder:  # something else holds the first port
        holder.bind(("127.0.0.1", host.port))
        holder.listen()
        piped = host.piped(a, "run", "start")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.splitlines()[-1] == f"dashboard {url} (started)"
    assert ["dashboard", "start", "--port", str(host.port + 1)] in host.calls()
    assert "noise line" not in piped.stdout + piped.stderr

    code, screen = host.pty(b, "run", "start", LOKI_NO_AUTO_OPEN="1")
    assert code == 0 and f"dashboard {url} (already running)" in screen, screen
    code, screen = host.pty(c, "run", "start", "--", "start", "--bg", "./prd.md")
    assert code == 0 and f"dashboard {url} (already running)" in screen, screen
    as_json = host.piped(d, "--json", "run", "start")
    assert as_json.returncode == 0 and as_json.stderr == ""
    assert json.loads(as_json.stdout)["dashboard"] == {"state": "running", "url": url}

    assert host.opened() == []
    assert [c for c in host.calls() if c[1] == "start"] == [
        ["dashboard", "start", "--port", str(host.port + 1)]
    ]
    assert host.listed(host.port + 1) == dict.fromkeys(map(str, (a, b, c, d)), True)


def test_without_loki_a_one_line_hint_and_a_hung_loki_is_stopped(
    engine: DockerEnv, host: Host, tmp_short: Path
) -> None:
    """No `loki` on PATH: the run starts and one line says how to get the dashboard (in
    the JSON with --json, nothing on stderr); the old --api is ignored with a warning. A
    `loki` that hangs is stopped after the timeout, and the run is not held up."""
    engine.publish()
    a, b, c = folder(tmp_short, "a"), folder(tmp_short, "b"), folder(tmp_short, "c")
    code, screen = host.pty(a, "run", "start", "--api", PATH=path_without_loki())
    assert code == 0, screen
    assert "lokictl: warning: --api is ignored: the container's dashboard stays off" in screen
    hints = [line for line in screen.splitlines() if line.startswith("lokictl: hint:")]
    assert hints == [
        "lokictl: hint: no host dashboard: Loki Mode's `loki` CLI is not on PATH (npm install "
        "-g loki-mode, or brew tap asklokesh/tap && brew install loki-mode); its dashboard "
        "lists this run"
    ], screen
    piped = host.piped(b, "--json", "run", "start", PATH=path_without_loki())
    assert piped.returncode == 0 and piped.stderr == ""
    assert json.loads(piped.stdout)["dashboard"]["state"] == "absent"
    assert host.calls() == [] and host.opened() == []

    began = time.monotonic()
    code, screen = host.pty(c, "run", "start", LOKI_FAKE_HANG="1", LOKICTL_DASHBOARD_TIMEOUT="2")
    assert code == 0, screen
    assert time.monotonic() - began < 60
    assert (
        f"lokictl: warning: `loki dashboard start --port {host.port}` did not finish in 2 s "
        "and was stopped" in screen
    )
    hung = host.call_pids()[host.calls().index(["dashboard", "start", "--port", str(host.port)])]
    wait_until(lambda: not _alive(hung), 10, "the hung loki to be gone")
    assert host.opened() == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
