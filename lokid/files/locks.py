"""The locks Loki Mode's own tools take, so their readers never see a torn write.

- bash (`autonomy/lib/lock.sh`): a mkdir mutex `<target>.lockdir` holding
  `owner.pid`; stale when the pid is dead and the folder is over 30 s old;
  polled every 50 ms for 5 s. Targets: `.loki/queue/.pending.lock` and
  `.loki/queue/.in-progress.lock`.
- Bun (`loki-ts/src/util/atomic.ts`): an O_EXCL file `<file>.lock` holding a
  pid, used for `queue/pending.json.lock`.

Stale locks: Loki Mode breaks one whose pid is dead *and* that is over 30 s
old. lokid breaks one whose recorded pid is dead at once (a live holder's pid
is alive, so this is safe, and a lokid restarted by its supervisor right after
a crash must not wait on its own dead lock), and a lock with no readable pid
once it is a few seconds old (the window between mkdir and writing the pid).

These block (polling); call them from a worker thread, never the trio thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from lokid.errors import LockTimeout
from lokid.files.pids import alive, parse_pid

POLL = 0.05
TIMEOUT = 5.0
NO_OWNER_STALE_AFTER = 5.0


def _stale(path: Path, owner: Path) -> bool:
    try:
        pid = parse_pid(owner.read_text())
    except (FileNotFoundError, NotADirectoryError):
        pid = None
    if pid is not None:
        return not alive(pid)
    try:
        return time.time() - os.stat(path).st_mtime > NO_OWNER_STALE_AFTER
    except FileNotFoundError:
        return True


@contextlib.contextmanager
def mkdir_lock(target: Path, timeout: float = TIMEOUT) -> Iterator[None]:
    lockdir = Path(f"{target}.lockdir")
    lockdir.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.mkdir(lockdir)
            break
        except FileExistsError:
            if _stale(lockdir, lockdir / "owner.pid"):
                shutil.rmtree(lockdir, ignore_errors=True)
                continue
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{lockdir} is held by another process") from None
            time.sleep(POLL)
    try:
        (lockdir / "owner.pid").write_text(f"{os.getpid()}\n")
        yield
    finally:
        shutil.rmtree(lockdir, ignore_errors=True)


@contextlib.contextmanager
def exclusive_file_lock(path: Path, timeout: float = TIMEOUT) -> Iterator[None]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            if _stale(path, path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{path} is held by another process") from None
            time.sleep(POLL)
    try:
        os.write(fd, f"{os.getpid()}".encode())
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def queue_file_lock(queue_dir: Path, state: str) -> Iterator[None]:
    """Every lock Loki Mode's tools take for `<state>.json`, in a fixed order."""
    with contextlib.ExitStack() as stack:
        if state in ("pending", "in-progress"):
            stack.enter_context(mkdir_lock(queue_dir / f".{state}.lock"))
        if state == "pending":
            stack.enter_context(exclusive_file_lock(queue_dir / "pending.json.lock"))
        yield
