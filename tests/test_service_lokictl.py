"""lokictl and an installed socket unit: connect through it, ask the manager, spawn last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from service_support import ACTIVATE, Activated

from lokictl._spawn import service_start_command
from lokid.service.units import systemd_units, this_installation


def _user(tmp: Path) -> dict[str, str]:
    """A user whose config and runtime folders are under `tmp`, with no reachable bus."""
    env = {
        **os.environ,
        "HOME": str(tmp / "home"),
        "XDG_CONFIG_HOME": str(tmp / "home" / ".config"),
        "XDG_RUNTIME_DIR": str(tmp / "rt"),
        "XDG_STATE_HOME": str(tmp / "state"),
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={tmp}/no-bus",
    }
    env.pop("LOKID_SOCKET", None)
    env.pop("LOKICTL_NO_SPAWN", None)
    return env


def _install_units(env: dict[str, str]) -> None:
    folder = Path(env["XDG_CONFIG_HOME"]) / "systemd" / "user"
    folder.mkdir(parents=True)
    for name, text in systemd_units(this_installation()).items():
        (folder / name).write_text(text)


def _unit_socket(env: dict[str, str]) -> Path:
    return Path(env["XDG_RUNTIME_DIR"]) / "lokid" / "lokid.sock"


def _lokictl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "lokictl", "--json", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def test_start_command_only_for_the_unit_socket(tmp_short, monkeypatch):
    env = _user(tmp_short)
    for name in ("HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(name, env[name])
    assert service_start_command(_unit_socket(env)) is None, "nothing installed yet"
    _install_units(env)
    expected = ["systemctl", "--user", "start", "lokid.socket"]
    assert service_start_command(_unit_socket(env)) == expected
    assert service_start_command(tmp_short / "elsewhere.sock") is None


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate missing")
def test_lokictl_connects_through_a_listening_socket_unit(tmp_short):
    env = _user(tmp_short)
    _install_units(env)
    unit = Activated(tmp_short, socket=_unit_socket(env))  # its state: tmp_short/state
    try:
        unit.start()
        done = _lokictl(env, "status")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["pid"] == unit.proc.pid, "the manager started lokid"
        assert not (tmp_short / "state" / "lokid" / "lokid.log").exists(), "nothing spawned"
    finally:
        unit.kill()


def test_lokictl_spawns_lokid_when_the_manager_cannot_start_the_unit(tmp_short):
    env = _user(tmp_short)
    _install_units(env)
    done = _lokictl(env, "status")
    try:
        assert done.returncode == 0, done.stderr
        assert (tmp_short / "state" / "lokid" / "lokid.log").exists(), "lokictl spawned lokid"
    finally:
        stopped = _lokictl(env, "daemon", "stop")
    assert stopped.returncode == 0, stopped.stderr
