"""Reading a file that anyone may have put in a project: never block, never exhaust memory.

Every file lokid reads from a `.loki/` folder goes through `read_file`. The file is opened
with O_NONBLOCK (a FIFO opened for reading would otherwise wait for a writer, forever) and
checked with fstat *after* opening (a check before is a race): anything but a regular file
is refused, as is one larger than the limit its kind allows (a symlink to /dev/zero is not
a regular file; a 5 GB log is too large). OS errors become `FileProblem` naming the file
and the reason, which callers turn into an event, a status field or an `unavailable` reply.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from lokid.errors import Unavailable

KiB, MiB = 1024, 1024 * 1024
# What each kind of file may weigh. Queue files hold whole task lists (a 100,000-task
# pending.json is ~40 MiB); the rest are small by design.
QUEUE_FILE_MAX = 128 * MiB
CONFIG_FILE_MAX = 1 * MiB
STATE_FILE_MAX = 8 * MiB  # dashboard-state.json, prd-signature.json, run.json
SIGNAL_FILE_MAX = 64 * KiB

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


class FileProblem(Unavailable):
    """A project file lokid cannot use; the message names it and says why."""


def describe(exc: OSError) -> str:
    """An OS error as a short reason (`symlink loop`, `permission denied`, ...)."""
    reasons = {
        errno.ELOOP: "a symlink loop",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENAMETOOLONG: "path too long",
        errno.ENOTDIR: "a file where a folder should be",
        errno.EISDIR: "a folder where a file should be",
        errno.ENOSPC: "disk full",
        errno.EROFS: "read-only file system",
        errno.EIO: "input/output error",
    }
    return reasons.get(exc.errno or 0, exc.strerror or str(exc))


def problem(path: Path | str, exc: OSError) -> FileProblem:
    return FileProblem(f"cannot use {path}: {describe(exc)}", {"errno": exc.errno})


def read_file(path: Path | str, limit: int) -> bytes | None:
    """The whole file, or None when it does not exist; `FileProblem` for anything else."""
    try:
        fd = os.open(path, _FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise problem(path, exc) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(f"cannot use {path}: not a regular file", {"mode": st.st_mode})
        if st.st_size > limit:
            raise FileProblem(
                f"cannot use {path}: {st.st_size} bytes, over the {limit}-byte limit",
                {"size": st.st_size, "limit": limit},
            )
        chunks: list[bytes] = []
        left = limit + 1  # the file may grow while we read; never past the limit
        while left > 0:
            chunk = os.read(fd, min(left, 4 * MiB))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise FileProblem(f"cannot use {path}: grew over the {limit}-byte limit")
        return data
    except OSError as exc:
        raise problem(path, exc) from exc
    finally:
        os.close(fd)


def exists(path: Path | str) -> bool:
    """Whether anything is at `path` (a stat; never opens it, so never blocks)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # something is there, even if we may not look at it
    return True


def is_dir(path: Path | str) -> bool:
    """A folder at `path`; an error looking counts as no (callers say why elsewhere)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False
