"""Loki Mode's signal files: `.loki/STOP`, `.loki/PAUSE`, `.loki/PAUSE_AT_CHECKPOINT`
and whatever lies in `.loki/signals/`, plus lokid's own pause, `.loki/lokid/PAUSE`. Read
straight from disk when asked, so the answer never depends on how far the watcher has got.

Claims pause while any of the three pause files exists. lokid keeps a pause of its own
because Loki Mode's runner, in its default perpetual mode, deletes `.loki/PAUSE` at its
next check: `lokictl pause` must keep lokid's agents paused anyway, until `lokictl resume`.
PAUSE_AT_CHECKPOINT pauses lokid's agents at their checkpoint, which for an agent is the
end of its task: what it holds it finishes, and it is handed nothing new.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from lokid.files.reading import SIGNAL_FILE_MAX, FileProblem, read_file
from lokid.wire.messages import UNDECODABLE


# Asked before every claim: a string join is a tenth of the cost of a Path join.
def is_paused(loki: Path) -> bool:
    return (
        os.path.exists(f"{loki}/PAUSE")
        or os.path.exists(f"{loki}/lokid/PAUSE")
        or os.path.exists(f"{loki}/PAUSE_AT_CHECKPOINT")
    )


def is_stopping(loki: Path) -> bool:
    return os.path.exists(f"{loki}/STOP")


def signal_names(loki: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(loki / "signals") if e.is_file())
    except OSError:
        return []


PAUSES = ("PAUSE", "lokid/PAUSE", "PAUSE_AT_CHECKPOINT")
# What `resume` clears, as `loki resume` does (it removes PAUSE, or STOP), and lokid's own.
RESUME_CLEARS = ("PAUSE", "lokid/PAUSE", "PAUSE_AT_CHECKPOINT", "STOP")


def remove(loki: Path, names: tuple[str, ...]) -> list[str]:
    """Remove those of `names` that exist; the ones removed, in order."""
    removed = []
    for name in names:
        try:
            os.unlink(loki / name)
        except FileNotFoundError:
            continue
        removed.append(name)
    return removed


def signal_content(path: Path) -> Any:
    """The file's JSON, or None when it is empty, too big, not a regular file, or not JSON
    (a bare marker)."""
    try:
        data = read_file(path, SIGNAL_FILE_MAX)
    except FileProblem:
        return None
    if not data or not data.strip():
        return None
    try:
        return msgspec.json.decode(data)
    except UNDECODABLE:
        return None


def touch(path: Path) -> None:
    """Create the signal file (an existing one is left as it is). O_NONBLOCK: a FIFO put
    there would otherwise hold the open until a reader came (ENXIO instead)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    os.close(fd)
