"""Keeping a copy of a Loki Mode file lokid could not use, before anything replaces it.

`.loki/queue/quarantine/<name>-<UTC time>-<n>.json` holds the bytes exactly as they were,
so nothing a tool wrote is lost even when its file cannot be read as tasks.
"""

from __future__ import annotations

import time
from pathlib import Path

from lokid.files.atomic import write_atomic


def quarantine(path: Path, quarantine_dir: Path, data: bytes) -> Path:
    """Write `data` (what was read from `path`) into `quarantine_dir`; returns the copy."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    copy = quarantine_dir / f"{path.stem}-{stamp}-{time.monotonic_ns() % 1_000_000:06d}.json"
    write_atomic(copy, data)
    return copy
