"""Unit files: the templates, what the installer renders from them, and install/uninstall."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lokid.paths import LAUNCHD_LABEL
from lokid.service.units import (
    PLIST_TEMPLATE,
    SYSTEMD_TEMPLATES,
    Installation,
    render_plist,
    systemd_quote,
    systemd_units,
    this_installation,
)

ANALYZE = shutil.which("systemd-analyze")


def unit_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_socket_template_has_the_required_keys():
    lines = unit_lines((SYSTEMD_TEMPLATES / "lokid.socket").read_text())
    for line in (
        "ListenStream=%t/lokid/lokid.sock",
        "SocketMode=0600",
        "DirectoryMode=0700",
        "FileDescriptorName=lokid",
    ):
        assert line in lines


def test_service_template_has_the_required_keys():
    lines = unit_lines((SYSTEMD_TEMPLATES / "lokid.service").read_text())
    for line in (
        "Type=notify",
        "ExecStart=@PYTHON@ -m lokid serve",
        "ExecReload=kill -HUP $MAINPID",
        "Restart=on-failure",
    ):
        assert line in lines
    assert any(line.startswith("WatchdogSec=") for line in lines)


def _verify(folder: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze --user verify` without a running systemd: a user manager wants
    $XDG_RUNTIME_DIR (for %t), and a private empty one is enough for an offline check.
    `--man=no` skips looking up Documentation= pages. Warnings go to the output with
    exit 0, so callers check the output as well."""
    runtime = tmp / "rt"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "notice"}
    cmd = [ANALYZE, "--user", "verify", "--man=no"]
    cmd += [str(folder / "lokid.socket"), str(folder / "lokid.service")]
    return subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=60)


def _write_units(folder: Path, inst: Installation) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in systemd_units(inst).items():
        (folder / name).write_text(text)


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing")
def test_rendered_units_pass_systemd_analyze_verify(tmp_short):
    _write_units(tmp_short / "units", this_installation())
    done = _verify(tmp_short / "units", tmp_short)
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing")
def test_a_python_path_with_spaces_and_specifiers_is_quoted(tmp_short):
    odd = tmp_short / "my env %h $HOME"
    odd.mkdir()
    (odd / "python").symlink_to(sys.executable)
    inst = Installation(python=str(odd / "python"), socket="/s", path="/bin", logs="/l")
    _write_units(tmp_short / "units", inst)
    done = _verify(tmp_short / "units", tmp_short)
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""


def test_systemd_quote():
    assert systemd_quote("/usr/bin/python3") == "/usr/bin/python3"
    assert systemd_quote("/a b/%i$X") == '"/a b/%%i$$X"'
    assert systemd_quote("/a b/%i$X", command=True) == '"/a b/%%i$X"'


def _rendered_plist(inst: Installation) -> dict:
    return plistlib.loads(render_plist(PLIST_TEMPLATE.read_bytes(), inst))


def test_plist_renders_with_absolute_paths_and_every_required_key():
    inst = this_installation()
    plist = _rendered_plist(inst)
    assert plist["Label"] == LAUNCHD_LABEL
    assert plist["ProgramArguments"] == [inst.python, "-m", "lokid", "serve"]
    assert os.path.isabs(plist["ProgramArguments"][0])
    sockets = plist["Sockets"]["lokid"]
    assert os.path.isabs(sockets["SockPathName"])
    assert sockets["SockPathMode"] == 384 == 0o600
    assert plist["KeepAlive"] == {"SuccessfulExit": False, "Crashed": True}
    path = plist["EnvironmentVariables"]["PATH"].split(":")
    assert path[0] == os.path.dirname(inst.python)
    assert all(os.path.isabs(entry) for entry in path)
    logs = Path.home() / "Library" / "Logs" / "lokid"
    assert Path(plist["StandardErrorPath"]).parent == logs
    assert "@" not in render_plist(PLIST_TEMPLATE.read_bytes(), inst).decode()


def test_plist_values_are_escaped():
    inst = Installation(python="/A&B/<py>", socket="/s o/l.sock", path="/bin", logs="/l")
    plist = _rendered_plist(inst)
    assert plist["ProgramArguments"][0] == "/A&B/<py>"
    assert plist["Sockets"]["lokid"]["SockPathName"] == "/s o/l.sock"


def _lokid(
    tmp: Path, *args: str, socket: Path | None = None, site: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`lokid service ...` for a user whose home is `tmp`, with no service manager to
    reach (so `--now` and uninstall cannot touch the machine's own user manager);
    with `site`, the lokid installed there rather than this checkout."""
    env = {
        **os.environ,
        "HOME": str(tmp / "home"),
        "XDG_CONFIG_HOME": str(tmp / "home" / ".config"),
        "XDG_RUNTIME_DIR": str(tmp / "rt"),
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={tmp}/no-bus",
    }
    env.pop("LOKID_SOCKET", None)
    if socket is not None:
        env["LOKID_SOCKET"] = str(socket)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    code = "import lokid, sys; from lokid.cli import main; sys.exit(main())"
    if site is not None:  # and prove it is the one that ran
        code = f"import lokid; assert lokid.__file__.startswith({str(site)!r}); {code}"
    cmd = [sys.executable, "-c", code, "service", *args]
    return subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=60)


def test_install_writes_systemd_units_and_prints_the_enable_command(tmp_short):
    done = _lokid(tmp_short, "install", "--manager", "systemd")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "systemctl --user daemon-reload && systemctl --user enable --now lokid.socket\n"
    )
    folder = tmp_short / "home" / ".config" / "systemd" / "user"
    service = (folder / "lokid.service").read_text()
    assert f"ExecStart={sys.executable} -m lokid serve" in service
    assert (folder / "lokid.socket").read_text() == (SYSTEMD_TEMPLATES / "lokid.socket").read_text()

    done = _lokid(tmp_short, "uninstall", "--manager", "systemd")
    assert done.returncode == 0, done.stderr
    assert not (folder / "lokid.service").exists()
    assert not (folder / "lokid.socket").exists()
    assert "systemctl --user disable --now lokid.socket lokid.service" in done.stderr


def test_an_installed_wheel_carries_the_templates(tmp_short):
    """Not only a source checkout: `pip install lokid` must be able to install its units."""
    root = Path(__file__).resolve().parents[1]
    wheels, site = tmp_short / "wheels", tmp_short / "site"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    for args in (
        lambda: ["wheel", "--no-deps", "-w", str(wheels), str(root)],
        lambda: ["install", "--no-deps", "--target", str(site), *map(str, wheels.glob("*.whl"))],
    ):
        done = subprocess.run([*pip, *args()], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert not (site / "lokid" / "service" / "templates" / "systemd").is_symlink()

    done = _lokid(tmp_short, "install", "--manager", "systemd", site=site)
    assert done.returncode == 0, done.stderr
    folder = tmp_short / "home" / ".config" / "systemd" / "user"
    assert (folder / "lokid.socket").read_text() == (root / "systemd" / "lokid.socket").read_text()


def test_install_now_says_so_when_the_manager_cannot_be_reached(tmp_short):
    done = _lokid(tmp_short, "install", "--now", "--manager", "systemd")
    assert done.returncode == 1
    assert "could not enable the units; run: systemctl --user daemon-reload" in done.stderr


def test_install_writes_the_launch_agent(tmp_short):
    done = _lokid(tmp_short, "install", "--manager", "launchd")
    assert done.returncode == 0, done.stderr
    plist_path = tmp_short / "home" / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    assert done.stdout == f"launchctl bootstrap gui/{os.getuid()} {plist_path}\n"
    plist = plistlib.loads(plist_path.read_bytes())
    assert plist["ProgramArguments"][0] == os.path.abspath(sys.executable)
    logs = tmp_short / "home" / "Library" / "Logs" / "lokid"
    assert plist["StandardErrorPath"] == str(logs / "lokid.log")
    assert logs.is_dir()
    sock_dir = Path(plist["Sockets"]["lokid"]["SockPathName"]).parent
    assert sock_dir.stat().st_mode & 0o777 == 0o700


def test_uninstall_without_units_is_fine(tmp_short):
    done = _lokid(tmp_short, "uninstall", "--manager", "systemd")
    assert done.returncode == 0
    assert "no lokid units are installed" in done.stderr


def test_idle_exit_must_be_a_duration():
    cmd = [sys.executable, "-m", "lokid", "serve", "--idle-exit", "-1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "a number of seconds >= 0" in done.stderr


def test_install_warns_about_a_lokid_that_bound_the_socket_itself(lokid, tmp_short):
    done = _lokid(tmp_short, "install", "--manager", "launchd", socket=lokid.socket)
    assert done.returncode == 0, done.stderr
    assert f"a lokid not run by the service serves {lokid.socket}" in done.stderr
    lokid.stop()
    done = _lokid(tmp_short, "install", "--manager", "launchd", socket=lokid.socket)
    assert "not run by the service" not in done.stderr


def test_an_unsafe_socket_folder_is_a_one_line_error(tmp_short):
    shared = tmp_short / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    done = _lokid(tmp_short, "install", "--manager", "launchd", socket=shared / "lokid.sock")
    assert done.returncode == 1
    assert done.stderr.startswith("lokid: install failed: ")
    assert "must be 0700" in done.stderr
    assert "Traceback" not in done.stderr
