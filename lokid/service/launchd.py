"""launchd: take the socket the agent's plist declares, via `launch_activate_socket`.

launchd creates the socket and passes it on request; libSystem's
`launch_activate_socket(name, &fds, &count)` returns a malloc'd fd array. The
C library is reached through `LibSystem`, a narrow interface, so Linux tests can
exercise the ctypes marshalling with a stand-in (launchd cannot run there).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from typing import Any, Protocol

from lokid.errors import LaunchdError
from lokid.server.listener import Listener
from lokid.service.activation import FD_NAME, adopt_fd

log = logging.getLogger("lokid.launchd")

LIBSYSTEM = "/usr/lib/libSystem.B.dylib"

FdArray = ctypes.POINTER(ctypes.c_int)
# int launch_activate_socket(const char *name, int **fds, size_t *cnt);
ACTIVATE_ARGTYPES = [ctypes.c_char_p, ctypes.POINTER(FdArray), ctypes.POINTER(ctypes.c_size_t)]


class LibSystem(Protocol):
    """The two libSystem functions lokid calls."""

    launch_activate_socket: Any
    free: Any


def load_libsystem(path: str = LIBSYSTEM) -> LibSystem:
    lib = ctypes.CDLL(path, use_errno=True)
    lib.launch_activate_socket.argtypes = ACTIVATE_ARGTYPES
    lib.launch_activate_socket.restype = ctypes.c_int
    lib.free.argtypes = [ctypes.c_void_p]
    lib.free.restype = None
    return lib


def activate_socket(lib: LibSystem, name: str = FD_NAME) -> list[int]:
    """The fds launchd made for the `Sockets` entry `name`; raises LaunchdError."""
    fds = FdArray()
    count = ctypes.c_size_t(0)
    code = lib.launch_activate_socket(name.encode(), ctypes.byref(fds), ctypes.byref(count))
    if code != 0:
        raise LaunchdError(code, name)
    try:
        return [fds[i] for i in range(count.value)]
    finally:
        if fds:
            lib.free(fds)


# ESRCH: not started by launchd; ENOENT: no such Sockets entry; EALREADY: taken already.
NOT_ACTIVATED = (errno.ESRCH, errno.ENOENT)


def from_launchd(lib: LibSystem | None = None, name: str = FD_NAME) -> Listener | None:
    """The Listener launchd holds for us, or None when launchd did not start us."""
    try:
        fds = activate_socket(lib or load_libsystem(), name)
    except LaunchdError as exc:
        if exc.code in NOT_ACTIVATED:
            return None
        raise
    except (OSError, AttributeError) as exc:  # no libSystem (or no such symbol): not macOS
        log.debug("libSystem unavailable: %s", exc)
        return None
    if not fds:
        return None
    for extra in fds[1:]:
        os.close(extra)
    return adopt_fd(fds[0], f"launchd ({name})")
