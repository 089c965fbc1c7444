"""The Neovim plugin (clients/nvim) in a real headless Neovim against a real lokid.

Each test runs one case of clients/nvim/tests/run.lua; the case waits for conditions with
deadlines (vim.wait with a predicate) and exits non-zero with the reason on failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import Lokid, no_engine, wait_until

ROOT = Path(__file__).resolve().parent.parent
NVIM_DIR = ROOT / "clients" / "nvim"
NVIM = shutil.which("nvim")

pytestmark = pytest.mark.skipif(
    NVIM is None, reason="nvim not installed (scripts/install-system-deps.sh installs neovim)"
)


def nvim_cmd(case: str) -> list[str]:
    assert NVIM is not None
    return [
        NVIM,
        "--headless",
        "-u",
        "NONE",
        "-i",
        "NONE",
        "-n",
        "--cmd",
        f"set rtp+={NVIM_DIR}",
        "--cmd",
        "runtime plugin/loki.lua",
        "-c",
        f"luafile {NVIM_DIR / 'tests' / 'run.lua'}",
    ]


def nvim_env(case: str, socket: Path, project: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "LOKI_TEST": case,
        "LOKID_SOCKET": str(socket),
        "LOKI_TEST_PROJECT": str(project),
        "LOKI_TEST_PYTHON": sys.executable,
        "LOKI_VECTORS": str(ROOT / "clients" / "vectors" / "vectors.json"),
        "PWD": str(project),
        "HOME": str(project.parent),
        "XDG_CONFIG_HOME": str(project.parent / "config"),
        "XDG_DATA_HOME": str(project.parent / "data"),
        "XDG_STATE_HOME": str(project.parent / "nvim-state"),
        **extra,
    }
    return env


def run_case(case: str, socket: Path, project: Path, timeout: float = 60, **extra: str) -> str:
    proc = subprocess.run(
        nvim_cmd(case),
        cwd=project,
        env=nvim_env(case, socket, project, **extra),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"nvim case {case} failed:\n{proc.stderr}{proc.stdout}"
    return proc.stderr


@pytest.fixture
def project(tmp_short: Path) -> Path:
    path = tmp_short / "proj"
    path.mkdir()
    return path


def test_lua_decoder_over_the_shared_vectors(tmp_short: Path) -> None:
    project = tmp_short / "p"
    project.mkdir()
    out = run_case("vectors", tmp_short / "none.sock", project)
    assert "vectors:" in out


def test_commands_buffers_live_refresh_and_notifications(tmp_short: Path, project: Path) -> None:
    # An engine endpoint that does not exist: `:Loki run` must report `unavailable`.
    daemon = Lokid(tmp_short, env=no_engine(tmp_short)).start()
    try:
        out = run_case("commands", daemon.socket, project)
    except AssertionError:
        print(daemon.log()[-5000:])
        raise
    finally:
        daemon.kill()
    assert "ok commands" in out


def test_events_log_starts_with_the_projects_recent_events(lokid: Lokid, project: Path) -> None:
    out = run_case("recent_events", lokid.socket, project)
    assert "skipped" not in out, "lokid serves project.status since issue 6"


def test_reconnects_after_lokid_restarts(tmp_short: Path, project: Path) -> None:
    daemon = Lokid(tmp_short).start()
    marker = tmp_short / "marker"
    proc = subprocess.Popen(
        nvim_cmd("reconnect"),
        cwd=project,
        env=nvim_env("reconnect", daemon.socket, project, LOKI_TEST_MARKER=str(marker)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: marker.with_suffix(".ready").exists() or proc.poll() is not None,
            30,
            "nvim to follow the project",
        )
        assert proc.poll() is None, proc.communicate()[1]
        assert daemon.stop() == 0
        daemon = Lokid(tmp_short).start()
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"nvim case reconnect failed:\n{stderr}{stdout}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        daemon.kill()


def test_no_daemon_is_reported_not_blocking(tmp_short: Path, project: Path) -> None:
    run_case("no_daemon", tmp_short / "nobody.sock", project)


def test_a_command_starts_lokid_when_it_is_not_running(tmp_short: Path, project: Path) -> None:
    socket = tmp_short / "run" / "lokid.sock"
    try:
        run_case("starts_lokid", socket, project)
    finally:
        # The editor's lokid is a detached process of its own: it must be there to stop.
        stop = [sys.executable, "-m", "lokictl", "--socket", str(socket), "--no-spawn"]
        done = subprocess.run([*stop, "daemon", "stop"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
