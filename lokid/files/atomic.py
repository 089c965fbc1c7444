"""Replace a file so a reader sees the old bytes or the new, never a mix."""

import ctypes
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
    tmp = path.with_name(f".{path.name}.lokid-{os.getpid()}.tmp")
    _write_tmp(tmp, data, fsync, mode)
    if still is not None and not still():
        os.unlink(tmp)
        return None
    os.replace(tmp, path)
    if fsync:
        _fsync_dir(path.parent)
    return os.stat(path)


def _write_tmp(tmp: Path, data: bytes, fsync: bool, mode: int = 0o644) -> None:
    tmp.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def signature(st: os.stat_result) -> tuple[int, int, int]:
    """Enough of a stat to tell our own write from someone else's."""
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def signature_of(path: Path) -> tuple[int, int, int] | None:
    try:
        return signature(os.stat(path))
    except FileNotFoundError:
        return None


# renameat2(2) flags (Linux). Exchanging instead of replacing hands back the file that was
# at the path at that very instant, so a writer that took no lock and replaced the file
# between our read and our rename is never silently overwritten: its file comes back to us.
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _renameat2() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_rename2 = _renameat2()


def _rename(src: Path, dst: Path, flags: int) -> None:
    assert _rename2 is not None
    if _rename2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(dst))


def write_exchanging(
    path: Path, data: bytes, fsync: bool = True
) -> tuple[os.stat_result, Path | None]:
    """Write `data` at `path` atomically and hand back what was there at that instant:
    (the new file's stat, the path the replaced file now has, or None when there was none).
    The caller reads and then removes the replaced file. Without renameat2 (not Linux) it
    falls back to a plain rename, and the replaced file is gone (None)."""
    tmp = path.with_name(f".{path.name}.lokid-{os.getpid()}.tmp")
    _write_tmp(tmp, data, fsync)
    if _rename2 is None:
        os.replace(tmp, path)
        displaced = None
    else:
        try:
            _rename(tmp, path, _RENAME_EXCHANGE)
            displaced = tmp
        except FileNotFoundError:  # nothing at `path` yet: create it, unless someone just did
            try:
                _rename(tmp, path, _RENAME_NOREPLACE)
                displaced = None
            except FileExistsError:
                _rename(tmp, path, _RENAME_EXCHANGE)
                displaced = tmp
    if fsync:
        _fsync_dir(path.parent)
    return os.stat(path), displaced
