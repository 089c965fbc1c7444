"""Loki Mode 7.63's cross-process lock on a migration's manifest.

Every read-modify-write of a migration (start a phase, advance, add a
checkpoint, append to progress.md) is one critical section under
`fcntl.flock(LOCK_EX)` on `<migration dir>/manifest.json.lock`, opened afresh
(`O_RDWR | O_CREAT`, 0644) for each acquisition and closed after. flock belongs
to the open file description, so a fresh one per acquisition serialises lokid's
worker threads, Loki Mode's dashboard threadpool and the `loki migrate` CLI
alike. Only the outermost operation takes it: a second acquisition in the same
thread, on a new fd, would wait for itself forever.

Loki Mode blocks in `flock` until it gets the lock; lokid must give up after
`timeout` seconds (and answer `unavailable` naming the file) but a blocking
`flock` cannot be interrupted, and polling with LOCK_NB loses every race to
blocked waiters: the kernel wakes those at each release, so under steady
contention a poller starves (measured in tests/test_migrations_concurrency.py:
with three Loki Mode writers busy, lokid's 60 checkpoints alternated with theirs
1-13 times of a possible 120 when polling every 10 ms, 118-120 times when
waiting in the queue). So lokid tries LOCK_NB
first and, when the lock is taken, waits in the kernel's queue like everyone
else, in a helper thread; on timeout the helper is left to take the lock
whenever it comes free and let it go at once. At most MAX_STRANDED helpers
(each a thread and an fd) may be left so; beyond that lokid polls instead.

This blocks: call it from a worker thread, never the trio thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from lokid.errors import Unavailable, unavailable_file

log = logging.getLogger("lokid.migrations")

LOCK_NAME = "manifest.json.lock"
# Loki Mode holds the lock for one JSON read and write (milliseconds); 5 s is the wait
# lokid gives Loki Mode's other locks (files/locks.py) before it answers `unavailable`.
TIMEOUT = 5.0
# Helpers still waiting for a lock someone holds past the timeout; each is a thread and
# an fd, so they are bounded: a lock held for good must not use up the process.
MAX_STRANDED = 8
POLL = 0.01  # seconds between LOCK_NB tries once MAX_STRANDED helpers are waiting

_stranded = 0
_stranded_lock = threading.Lock()


class LockTimeout(Unavailable):
    """Another process held a manifest lock for longer than lokid waits."""


def lock_path(folder: Path) -> Path:
    return folder / LOCK_NAME


@contextlib.contextmanager
def manifest_lock(folder: Path, timeout: float = TIMEOUT) -> Iterator[None]:
    """Hold the migration's manifest lock for the body (see the module's docstring).

    Raises LockTimeout after `timeout` seconds; `unavailable` too when the lock file
    cannot be opened (a read-only folder). The migration folder must exist: this
    never creates it.
    """
    path = lock_path(folder)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise unavailable_file(f"open the lock {path}", exc) from exc
    _acquire(fd, path, timeout)  # on failure the fd is closed or handed to a helper
    try:
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _acquire(fd: int, path: Path, timeout: float) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    if _stranded < MAX_STRANDED:
        _queue(fd, path, timeout)
    else:
        _poll(fd, path, timeout)


def _timeout(path: Path, timeout: float) -> LockTimeout:
    return LockTimeout(
        f"{path} is held by another process (waited {timeout:g} s)", {"lock": str(path)}
    )


class _Waiter:
    """A helper thread blocked in flock(LOCK_EX) on the caller's fd.

    `state` goes waiting -> locked | failed (the caller carries on or gives up), or
    waiting -> abandoned (the caller timed out; the fd is the helper's to close).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = threading.Event()
        self.mutex = threading.Lock()
        self.state = "waiting"

    def wait(self) -> None:
        global _stranded
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            locked = True
        except OSError:
            log.exception("waiting for a manifest lock failed")
            locked = False
        with self.mutex:
            if self.state == "waiting":
                self.state = "locked" if locked else "failed"
                self.done.set()
                return
        # The caller gave up: let the lock go at once, for whoever waits behind us.
        if locked:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        with _stranded_lock:
            _stranded -= 1


def _queue(fd: int, path: Path, timeout: float) -> None:
    global _stranded
    waiter = _Waiter(fd)
    threading.Thread(target=waiter.wait, name=f"lock {path}", daemon=True).start()
    waiter.done.wait(timeout)
    with waiter.mutex:
        if waiter.state == "locked":
            return  # perhaps right at the deadline: the caller proceeds all the same
        if waiter.state == "failed":
            os.close(fd)
            raise Unavailable(f"cannot lock {path}", {"lock": str(path)})
        waiter.state = "abandoned"
        with _stranded_lock:
            _stranded += 1
    raise _timeout(path, timeout)


def _poll(fd: int, path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            os.close(fd)
            raise _timeout(path, timeout)
        time.sleep(min(POLL, left))
