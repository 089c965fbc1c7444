"""Pid files and whether their process lives: lock owners (`owner.pid`), Loki Mode's run
pid files, the pid in lokid's own temp file names."""

from __future__ import annotations

import os


def parse_pid(text: str | bytes) -> int | None:
    """The pid a pid file holds; None for anything that is not a positive number."""
    try:
        pid = int(text.strip())
    except ValueError:
        return None
    return pid if pid > 0 else None


def alive(pid: int) -> bool:
    """The process exists (one of another user's counts: we may not signal it, but it is
    there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
