"""Replace a file so a reader sees the old bytes or the new, never a mix."""

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(
    path: Path,
    data: bytes,
    fsync: bool = True,
    still: Callable[[], bool] | None = None,
    mode: int = 0o644,
) -> os.stat_result | None:
    """tmp in the same folder, fsync, rename over, fsync the folder; returns the new stat.

    `still`, checked just before the rename, can call the write off (None is returned):
    a writer that takes no lock may have changed the file since it was read. `mode` is
    the new file's (before the umask).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.lokid-{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    if still is not None and not still():
        os.unlink(tmp)
        return None
    os.replace(tmp, path)
    if fsync:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return os.stat(path)


def signature(st: os.stat_result) -> tuple[int, int, int]:
    """Enough of a stat to tell our own write from someone else's."""
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def signature_of(path: Path) -> tuple[int, int, int] | None:
    try:
        return signature(os.stat(path))
    except FileNotFoundError:
        return None
