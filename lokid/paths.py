"""Where lokid's socket and state live, and the checks that keep them private.

Light (the standard library and `lokid.errors`): `lokictl` resolves the same socket path
as the daemon.
"""

import contextlib
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

from lokid.errors import UnsafePath

# sun_path is 108 bytes on Linux and 104 on the BSDs/macOS, NUL included.
SUN_PATH_MAX = 104 if sys.platform == "darwin" else 108


def default_socket_path(env: Mapping[str, str] | None = None) -> Path:
    """`$LOKID_SOCKET`, else `$XDG_RUNTIME_DIR/lokid/lokid.sock`, else a per-uid default."""
    env = os.environ if env is None else env
    if env.get("LOKID_SOCKET"):
        return Path(env["LOKID_SOCKET"])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "lokid" / "lokid.sock"
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "lokid" / "lokid.sock"
    return Path(f"/tmp/lokid-{os.getuid()}") / "lokid.sock"


def logical_cwd(env: Mapping[str, str] | None = None) -> str:
    """The current folder as the shell names it (`$PWD`, symlinks kept), as Loki Mode
    names a project and its container; `os.getcwd()` would resolve them."""
    env = os.environ if env is None else env
    return env.get("PWD") or os.getcwd()


def absolute_project(text: str, env: Mapping[str, str] | None = None) -> str:
    """A project path as a user types it (`.`, `proj/`, `../app`) made absolute and normal
    against the logical $PWD, symlinks kept: the wire accepts only normal absolute paths."""
    path = text if os.path.isabs(text) else os.path.join(logical_cwd(env), text)
    path = os.path.normpath(path)
    return "/" + path.lstrip("/") if path.startswith("//") else path


def find_project(start: str, env: Mapping[str, str] | None = None) -> str | None:
    """The nearest folder at or above `start` that holds a `.loki/` folder, as git finds
    its repository; None outside any project.

    `$HOME` itself never counts (its `.loki/` is Loki Mode's global folder, not a
    project) unless `start` is $HOME: asking from there means it.
    """
    env = os.environ if env is None else env
    home = os.path.normpath(env.get("HOME") or str(Path.home()))
    path = start = absolute_project(start, env)
    while True:
        if (path != home or path == start) and os.path.isdir(os.path.join(path, ".loki")):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def resolve_socket_path(explicit: str | None, env: Mapping[str, str] | None = None) -> Path:
    path = Path(explicit) if explicit else default_socket_path(env)
    check_sun_path(path)
    return path


def check_sun_path(path: Path) -> None:
    size = len(os.fsencode(path))
    if size >= SUN_PATH_MAX:
        raise UnsafePath(
            f"socket path is {size} bytes, over the {SUN_PATH_MAX - 1}-byte limit of a unix "
            f"socket address (sun_path): {path}; pass a shorter --socket or set LOKID_SOCKET"
        )


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """lokid's own state (watched projects, spawn log): `$XDG_STATE_HOME/lokid`."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lokid"


def ensure_private_dir(path: Path) -> None:
    """Create `path` 0700 if missing, then verify it is ours and private.

    Refuses a symlink, a folder owned by another uid, or one with any group or
    other permission bit: another user could otherwise swap or read the socket.
    """
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{path} is a symlink; refusing to put the socket there")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise UnsafePath(f"{path} is owned by uid {st.st_uid}, not by us (uid {os.getuid()})")
    if st.st_mode & 0o077:
        raise UnsafePath(
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0700 "
            f"(run: chmod 700 {path})"
        )


# -- service manager units (shared by `lokid service install` and lokictl) ------------------

SYSTEMD_SOCKET_UNIT = "lokid.socket"
SYSTEMD_SERVICE_UNIT = "lokid.service"
LAUNCHD_LABEL = "dev.lokid.lokid"


def systemd_user_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where systemd looks for a user's own units: `$XDG_CONFIG_HOME/systemd/user`."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def systemd_socket_path(env: Mapping[str, str] | None = None) -> Path | None:
    """The socket `lokid.socket` listens on (`%t/lokid/lokid.sock`), when %t is known."""
    env = os.environ if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "lokid" / "lokid.sock" if runtime else None


def launchd_plist_path() -> Path:
    return Path.home() / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"


def launchd_log_dir() -> Path:
    return Path.home() / "Library" / "Logs" / "lokid"
