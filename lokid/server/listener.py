"""The listening socket: bound safely, one daemon per path, drained on shutdown.

Binding is ordered so that two daemons can never share a path: take the lock
file beside the socket first, then probe any socket file left behind (a live
one means another daemon without our lock; a refused one is stale and is
replaced), then bind with a umask that makes the socket 0600 from birth.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import trio

from lokid.errors import AlreadyRunning, UnsafePath
from lokid.paths import check_sun_path, ensure_private_dir
from lokid.server.peer import peer_credentials

log = logging.getLogger("lokid.listener")

BACKLOG = socket.SOMAXCONN  # a burst of clients connecting at once must not get EAGAIN

# Called with each accepted socket of our own uid and its peer's pid.
Accepted = Callable[[socket.socket, int | None], None]


class Listener:
    """A bound listening socket plus the lock that makes it ours."""

    def __init__(self, sock: socket.socket, path: Path | None, lock_fd: int | None) -> None:
        self.sock = sock
        self.path = path
        self._lock_fd = lock_fd
        self._ino = os.stat(path).st_ino if path is not None else None

    @classmethod
    def bind(cls, path: Path) -> Listener:
        check_sun_path(path)
        ensure_private_dir(path.parent)
        lock_fd = _take_lock(path.with_name(path.name + ".lock"))
        try:
            _clear_stale(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old_umask = os.umask(0o177)
            try:
                sock.bind(os.fspath(path))
            finally:
                os.umask(old_umask)
            os.chmod(path, 0o600)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(sock, path, lock_fd)

    def close(self) -> None:
        """Close, and unlink the socket file only if it is still the one we bound."""
        self.sock.close()
        if self.path is not None:
            try:
                st = os.lstat(self.path)
                if stat.S_ISSOCK(st.st_mode) and st.st_ino == self._ino:
                    self.path.unlink()
            except FileNotFoundError:
                pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _take_lock(lock_path: Path) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise AlreadyRunning(
            f"another lokid (pid {holder}) is already serving {lock_path.with_suffix('')}"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _clear_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UnsafePath(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        log.info("replacing stale socket %s", path)
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise AlreadyRunning(f"a live daemon already answers on {path}")


async def accept_loop(listener: Listener, stopping: Callable[[], bool], accepted: Accepted) -> None:
    """Accept until cancelled or stopping; `accepted` takes each connection of our uid."""
    lsock = listener.sock
    my_uid = os.getuid()
    while True:
        await trio.lowlevel.wait_readable(lsock)
        if stopping():
            # Stopping was decided after this wake-up was scheduled (say, idle exit saw
            # no client a moment ago). Accepting now would only close the connection
            # unread; left in the backlog it stays with a manager's socket for the next
            # lokid, or is refused when ours closes.
            return
        try:
            sock, _ = lsock.accept()
        except BlockingIOError:
            continue
        except OSError as exc:
            # EMFILE and friends: say so, back off, keep serving the clients we have.
            log.warning("accept failed: %s", exc)
            await trio.sleep(0.1)
            continue
        sock.setblocking(False)
        try:
            pid, uid = peer_credentials(sock)
        except OSError as exc:
            log.warning("could not read peer credentials (%s); refusing connection", exc)
            sock.close()
            continue
        if uid != my_uid:
            log.warning("refused a connection from uid %d (pid %s)", uid, pid)
            sock.close()
            continue
        accepted(sock, pid)
