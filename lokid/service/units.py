"""`lokid service install|uninstall`: render the unit templates for this installation.

The files in `systemd/` and `launchd/` are the one source of truth (an installed
wheel carries them as package data); installing fills in this installation's
absolute paths (launchd expands neither `~` nor `$VAR`, and a user manager's PATH
rarely holds a virtual environment).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import plistlib
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec

from lokid.paths import (
    LAUNCHD_LABEL,
    SYSTEMD_SERVICE_UNIT,
    SYSTEMD_SOCKET_UNIT,
    UnsafePath,
    default_socket_path,
    ensure_private_dir,
    launchd_log_dir,
    launchd_plist_path,
    systemd_socket_path,
    systemd_user_dir,
)

Manager = Literal["systemd", "launchd"]

# The templates are the top-level systemd/ and launchd/ folders: symlinks in a source
# checkout, copies in an installed wheel (package data).
TEMPLATES = Path(__file__).resolve().parent / "templates"
SYSTEMD_TEMPLATES = TEMPLATES / "systemd"
PLIST_TEMPLATE = TEMPLATES / "launchd" / f"{LAUNCHD_LABEL}.plist"


class Installation(msgspec.Struct, frozen=True):
    """The absolute paths a rendered unit needs."""

    python: str
    socket: str
    path: str
    logs: str


def this_installation(env: Mapping[str, str] | None = None) -> Installation:
    env = os.environ if env is None else env
    python = os.path.abspath(sys.executable)
    return Installation(
        python=python,
        socket=str(default_socket_path(env)),
        path=search_path(os.path.dirname(python), env.get("PATH", "")),
        logs=str(launchd_log_dir()),
    )


def search_path(first: str, current: str) -> str:
    """PATH for launchd: our bin folder, the user's absolute entries, the system ones."""
    system = ["/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
    entries = [first, *current.split(os.pathsep), *system]
    return os.pathsep.join(dict.fromkeys(e for e in entries if os.path.isabs(e)))


# -- rendering ------------------------------------------------------------------------------


def systemd_quote(arg: str, command: bool = False) -> str:
    """One ExecStart word: `%` starts a specifier, `$` a variable (but not in the command
    itself, which systemd leaves unexpanded), whitespace splits."""
    escaped = arg.replace("%", "%%")
    if not command:
        escaped = escaped.replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in escaped):
        return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def render_systemd(template: str, inst: Installation) -> str:
    return template.replace("@PYTHON@", systemd_quote(inst.python, command=True))


def systemd_units(inst: Installation) -> dict[str, str]:
    """File name -> rendered text of both units."""
    return {
        name: render_systemd((SYSTEMD_TEMPLATES / name).read_text(), inst)
        for name in (SYSTEMD_SOCKET_UNIT, SYSTEMD_SERVICE_UNIT)
    }


def render_plist(template: bytes, inst: Installation) -> bytes:
    """Fill the `@NAME@` strings; plistlib does the XML escaping."""
    values = {"@PYTHON@": inst.python, "@SOCKET@": inst.socket, "@PATH@": inst.path}
    values["@LOGS@"] = inst.logs

    def fill(node: object) -> object:
        if isinstance(node, str):
            for key, value in values.items():
                node = node.replace(key, value)
            return node
        if isinstance(node, list):
            return [fill(item) for item in node]
        if isinstance(node, dict):
            return {key: fill(value) for key, value in node.items()}
        return node

    return plistlib.dumps(fill(plistlib.loads(template)))


# -- install --------------------------------------------------------------------------------


class Plan(msgspec.Struct, frozen=True):
    """What `install` writes, and the commands that enable (or disable) it."""

    files: dict[str, bytes]
    enable: list[list[str]]
    disable: list[list[str]]
    socket: str


def systemd_plan(inst: Installation, env: Mapping[str, str] | None = None) -> Plan:
    folder = systemd_user_dir(env)
    units = systemd_units(inst)
    ctl = ["systemctl", "--user"]
    socket_path = systemd_socket_path(env)
    return Plan(
        files={str(folder / name): text.encode() for name, text in units.items()},
        enable=[[*ctl, "daemon-reload"], [*ctl, "enable", "--now", SYSTEMD_SOCKET_UNIT]],
        disable=[
            [*ctl, "disable", "--now", SYSTEMD_SOCKET_UNIT, SYSTEMD_SERVICE_UNIT],
            [*ctl, "daemon-reload"],
        ],
        socket=str(socket_path) if socket_path else "$XDG_RUNTIME_DIR/lokid/lokid.sock",
    )


def launchd_plan(inst: Installation) -> Plan:
    plist = launchd_plist_path()
    domain = f"gui/{os.getuid()}"
    return Plan(
        files={str(plist): render_plist(PLIST_TEMPLATE.read_bytes(), inst)},
        enable=[["launchctl", "bootstrap", domain, str(plist)]],
        disable=[["launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"]],
        socket=inst.socket,
    )


def plan_for(manager: Manager, env: Mapping[str, str] | None = None) -> Plan:
    inst = this_installation(env)
    return launchd_plan(inst) if manager == "launchd" else systemd_plan(inst, env)


def one_command(commands: list[list[str]]) -> str:
    return " && ".join(shlex.join(cmd) for cmd in commands)


def _say(text: str) -> None:
    print(f"lokid: {text}", file=sys.stderr)


def _run(commands: list[list[str]], quiet: bool = False) -> bool:
    out = subprocess.DEVNULL if quiet else None
    for cmd in commands:
        try:
            done = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=False, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            _say(f"{shlex.join(cmd)} failed: {exc}")
            return False
        if done.returncode != 0:
            return False
    return True


def _self_bound(path: str) -> bool:
    """A lokid that bound `path` itself holds the lock beside it (a socket-activated one
    does not). Probing the lock, unlike connecting, never starts an installed service."""
    try:
        fd = os.open(path + ".lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def install(manager: Manager, now: bool = False, env: Mapping[str, str] | None = None) -> int:
    """Write the units; print the command that enables them (or run it with `now`)."""
    plan = plan_for(manager, env)
    if manager == "launchd":
        ensure_private_dir(Path(plan.socket).parent)
        launchd_log_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, data in plan.files.items():
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(data)
        _say(f"wrote {name}")
    if _self_bound(plan.socket):
        _say(f"a lokid not run by the service serves {plan.socket}; stop it: lokictl daemon stop")
    if not now:
        print(one_command(plan.enable))
        return 0
    if manager == "launchd":
        _run(plan.disable, quiet=True)  # bootstrap refuses an agent that is still loaded
    if _run(plan.enable):
        _say(f"enabled; lokid starts on the first connection to {plan.socket}")
        return 0
    _say(f"could not enable the units; run: {one_command(plan.enable)}")
    return 1


def uninstall(manager: Manager, env: Mapping[str, str] | None = None) -> int:
    """Stop and disable what is loaded, then remove the files."""
    plan = plan_for(manager, env)
    installed = [name for name in plan.files if os.path.exists(name)]
    if not installed:
        _say("no lokid units are installed")
        return 0
    stopped = _run(plan.disable[:1])
    for name in installed:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        _say(f"removed {name}")
    if stopped:
        _run(plan.disable[1:])
    else:
        _say(f"could not reach the service manager; to stop lokid: {one_command(plan.disable)}")
    return 0


def run(action: str, manager: Manager, now: bool = False) -> int:
    """`lokid service ACTION`: a folder we may not use or a missing template is an error
    message, not a traceback."""
    try:
        return install(manager, now) if action == "install" else uninstall(manager)
    except (OSError, UnsafePath) as exc:
        _say(f"{action} failed: {exc}")
        return 1


def default_manager() -> Manager:
    return "launchd" if sys.platform == "darwin" else "systemd"
