"""The Neovim plugin (clients/nvim) in a real headless Neovim against a real lokid.

Each test runs one case of clients/nvim/tests/run.lua; the case waits for conditions with
deadlines (vim.wait with a predicate) and exits non-zero with the reason on failure. Every
case runs in two Neovims: Debian's (0.7, the oldest the README promises) and a current one
(see editorhosts.nvim_current). The plugin in a real terminal: tests/test_nvim_host.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from editorhosts import need, nvim_current
from hostdash import free_pair, path_with_fake_loki, path_without_loki, stop_dashboard

from support import Lokid, no_engine, wait_until

ROOT = Path(__file__).resolve().parent.parent
NVIM_DIR = ROOT / "clients" / "nvim"


@pytest.fixture(scope="module", params=["debian", "current"])
def nvim(request: pytest.FixtureRequest) -> str:
    """The Neovim binary: Debian's (scripts/install-system-deps.sh) or a current one."""
    if request.param == "debian":
        found = shutil.which("nvim")
        need("nvim", found is not None, "nvim is not installed (scripts/install-system-deps.sh)")
        assert found is not None
        return found
    return str(nvim_current())


def nvim_cmd(nvim: str) -> list[str]:
    return [
        nvim,
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


def run_case(
    nvim: str, case: str, socket: Path, project: Path, timeout: float = 60, **extra: str
) -> str:
    proc = subprocess.run(
        nvim_cmd(nvim),
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
    (path / ".loki").mkdir(parents=True)
    return path


def test_lua_decoder_over_the_shared_vectors(nvim: str, tmp_short: Path) -> None:
    project = tmp_short / "p"
    project.mkdir()
    out = run_case(nvim, "vectors", tmp_short / "none.sock", project)
    assert "vectors:" in out


def test_commands_buffers_live_refresh_and_notifications(
    nvim: str, tmp_short: Path, project: Path
) -> None:
    # An engine endpoint that does not exist: `:Loki run` must report `unavailable`.
    daemon = Lokid(tmp_short, env=no_engine(tmp_short)).start()
    try:
        out = run_case(nvim, "commands", daemon.socket, project)
    except AssertionError:
        print(daemon.log()[-5000:])
        raise
    finally:
        daemon.kill()
    assert "ok commands" in out


def test_events_log_starts_with_the_projects_recent_events(
    nvim: str, lokid: Lokid, project: Path
) -> None:
    out = run_case(nvim, "recent_events", lokid.socket, project)
    assert "skipped" not in out, "lokid serves project.status since issue 6"


def test_reconnects_after_lokid_restarts(nvim: str, tmp_short: Path, project: Path) -> None:
    daemon = Lokid(tmp_short).start()
    marker = tmp_short / "marker"
    proc = subprocess.Popen(
        nvim_cmd(nvim),
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


def test_no_daemon_is_reported_not_blocking(nvim: str, tmp_short: Path, project: Path) -> None:
    run_case(nvim, "no_daemon", tmp_short / "nobody.sock", project)


def test_a_command_starts_lokid_when_it_is_not_running(
    nvim: str, tmp_short: Path, project: Path
) -> None:
    socket = tmp_short / "run" / "lokid.sock"
    try:
        run_case(nvim, "starts_lokid", socket, project)
    finally:
        # The editor's lokid is a detached process of its own: it must be there to stop.
        stop = [sys.executable, "-m", "lokictl", "--socket", str(socket), "--no-spawn"]
        done = subprocess.run([*stop, "daemon", "stop"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_background_reconnects_never_run_the_start_command(nvim: str, tmp_short: Path) -> None:
    """lokid stopped by SIGTERM; the case then puts a stand-in on its socket path."""
    daemon = Lokid(tmp_short).start()
    marker = tmp_short / "marker"
    project = tmp_short / "p"
    project.mkdir()
    env = nvim_env("no_start_on_reconnect", daemon.socket, project, LOKI_TEST_MARKER=str(marker))
    proc = subprocess.Popen(
        nvim_cmd(nvim),
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: Path(f"{marker}.ready").exists() or proc.poll() is not None,
            30,
            "nvim to connect",
        )
        assert proc.poll() is None, proc.communicate()[1]
        assert daemon.stop() == 0
        Path(f"{marker}.stopped").touch()
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"nvim case failed:\n{stderr}{stdout}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        daemon.kill()


def test_close_frees_the_reconnect_timer(nvim: str, tmp_short: Path, project: Path) -> None:
    run_case(nvim, "timer_closed", tmp_short / "nobody.sock", project)


def deprecated_names(doc: str) -> set[str]:
    """The Lua and API names a Neovim's doc/deprecated.txt lists."""
    tags = re.findall(r"\*((?:vim\.|nvim_)[\w.]+)(?:\(\))?\*", doc)
    bullets = re.findall(r"^\s*\u2022 `?((?:vim\.|nvim_)[\w.]+)", doc, re.M)
    return set(tags) | set(bullets)


def test_the_plugin_uses_nothing_current_neovim_deprecates() -> None:
    """Names from the current Neovim's own deprecated.txt; `new or old` (the old name only
    where the new one is missing, as on 0.7) is allowed."""
    doc = nvim_current().parent.parent / "share" / "nvim" / "runtime" / "doc" / "deprecated.txt"
    names = deprecated_names(doc.read_text())
    assert {"vim.loop", "nvim_buf_set_option", "vim.tbl_islist"} <= names
    found = []
    for path in sorted(NVIM_DIR.rglob("*.lua")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = re.sub(r"--.*$", "", line)
            code = re.sub(r"\bvim\.[\w.]+ or vim\.[\w.]+", "", code)
            for name in names:
                # nvim_* as vim.api.nvim_*; vim.* names whole (vim.loop, not x.vim.loop)
                before = r"(?<!\w)" if name.startswith("nvim_") else r"(?<![\w.])"
                if re.search(rf"{before}{re.escape(name)}(?!\w)", code):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {name}")
    assert not found, "deprecated in current Neovim:\n" + "\n".join(found)


def test_host_dashboard_started_reused_timed_out_or_hinted(
    nvim: str, tmp_short: Path, project: Path
) -> None:
    """Start Run's host dashboard (clients/nvim/lua/loki/dashboard.lua) against the stand-in
    `loki` CLI (tests/fake_loki): started, reused, a hung one stopped, none: the hint."""
    try:
        run_case(
            nvim,
            "dashboard",
            tmp_short / "none.sock",
            project,
            PATH=path_with_fake_loki(),
            LOKI_DASHBOARD_PORT=str(free_pair()),
            LOKI_TEST_PATH_WITHOUT_LOKI=path_without_loki(),
        )
    finally:
        stop_dashboard(project.parent)


@pytest.mark.docker
def test_run_starts_the_host_dashboard(nvim: str, engine: Any, tmp_short: Path) -> None:
    """`:Loki run` on a real engine, then Loki Mode's dashboard on the host is started and
    its address said (HOME is shared with lokid, so the dashboard reads lokid's registry)."""
    from dockerenv import spawn

    engine.publish()
    daemon = spawn(engine, tmp_short)
    project = tmp_short / "proj"
    (project / ".loki").mkdir(parents=True)
    try:
        run_case(
            nvim,
            "run_dashboard",
            daemon.socket,
            project,
            timeout=120,
            HOME=str(tmp_short / "home"),
            PATH=path_with_fake_loki(),
            LOKI_DASHBOARD_PORT=str(free_pair()),
        )
    finally:
        stop_dashboard(tmp_short / "home")
        daemon.kill()
