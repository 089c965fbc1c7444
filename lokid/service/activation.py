"""Socket activation: serve a listening socket the service manager made and handed us.

systemd passes fds from 3 up with `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`
(the `sd_listen_fds` protocol); launchd hands them over through
`launch_activate_socket`. The manager owns the socket file: lokid never takes
the lock beside it and never unlinks it, so a connection that arrives while we
stop waits in the kernel's queue for the next lokid.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import stat
from collections.abc import MutableMapping

import msgspec

from lokid.errors import ActivationError
from lokid.server.listener import Listener

log = logging.getLogger("lokid.activation")

LISTEN_FDS_START = 3
LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
FD_NAME = "lokid"  # FileDescriptorName= in lokid.socket, the Sockets key in the plist


class PassedFd(msgspec.Struct, frozen=True):
    fd: int
    name: str


def listen_fds(env: MutableMapping[str, str], pid: int) -> list[PassedFd]:
    """The fds passed to *this* process; the variables are unset either way (children
    must not believe the sockets are theirs)."""
    values = {name: env.pop(name, None) for name in LISTEN_VARS}
    if values["LISTEN_PID"] != str(pid):
        return []
    try:
        count = int(values["LISTEN_FDS"] or "0")
    except ValueError:
        return []
    names = (values["LISTEN_FDNAMES"] or "").split(":") if values["LISTEN_FDNAMES"] else []
    names += ["unknown"] * (count - len(names))
    return [PassedFd(LISTEN_FDS_START + i, names[i]) for i in range(max(count, 0))]


def pick(fds: list[PassedFd], name: str = FD_NAME) -> PassedFd | None:
    """The fd named `name`, else the first one (fd 3)."""
    return next((f for f in fds if f.name == name), fds[0] if fds else None)


def check_listening_unix(sock: socket.socket) -> None:
    """Refuse anything but a listening AF_UNIX stream socket."""
    kind = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
    domain = sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) if _HAS_DOMAIN else sock.family
    listening = sock.getsockopt(socket.SOL_SOCKET, _ACCEPTCONN) if _ACCEPTCONN else True
    if domain != socket.AF_UNIX or kind != socket.SOCK_STREAM or not listening:
        raise ActivationError(
            f"fd {sock.fileno()} is not a listening unix stream socket "
            f"(domain {domain}, type {kind}, listening {bool(listening)})"
        )


_HAS_DOMAIN = hasattr(socket, "SO_DOMAIN")  # Linux; elsewhere the family from getsockname
_ACCEPTCONN = getattr(socket, "SO_ACCEPTCONN", None)


def adopt_fd(fd: int, origin: str) -> Listener:
    """Wrap a passed fd as a Listener that owns neither a lock nor the socket file."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise ActivationError(f"fd {fd} from {origin} is not a socket")
    except OSError as exc:
        raise ActivationError(f"fd {fd} from {origin} is not open: {exc}") from None
    fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ActivationError(f"fd {fd} from {origin} is not a usable socket: {exc}") from None
    try:
        check_listening_unix(sock)
    except BaseException:
        sock.detach()  # not ours to close: leave the manager's fd as it was
        raise
    sock.setblocking(False)
    log.info("serving the socket %s passed by %s (fd %d)", describe(sock), origin, fd)
    return Listener(sock, None, None)


def describe(sock: socket.socket) -> str:
    with contextlib.suppress(OSError):
        name = sock.getsockname()
        if isinstance(name, bytes):
            return "@" + name[1:].decode(errors="replace")
        return name or "(unnamed)"
    return "(unknown)"


def from_systemd(
    env: MutableMapping[str, str] | None = None, pid: int | None = None
) -> Listener | None:
    """The Listener systemd passed us, or None when we were not socket-activated."""
    env = os.environ if env is None else env
    fds = listen_fds(env, os.getpid() if pid is None else pid)
    chosen = pick(fds)
    if chosen is None:
        return None
    for other in fds:
        if other != chosen:
            log.warning("ignoring passed fd %d (%s): lokid serves one socket", other.fd, other.name)
    return adopt_fd(chosen.fd, f"systemd ({chosen.name})")
