"""Reading `.loki/queue/pending.json` as Loki Mode's tools write it, and quarantine.

Shapes seen in the wild: a bare array (the common case) or `{"tasks": [...]}`.
A file that does not parse is copied aside before anything replaces it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import msgspec

from lokid.errors import BadFile
from lokid.wire.messages import UNDECODABLE


def parse_pending(data: bytes) -> list[Any]:
    if not data.strip():
        return []
    try:
        value = msgspec.json.decode(data)
    except UNDECODABLE as exc:
        raise BadFile(f"not valid JSON: {exc}") from exc
    if isinstance(value, dict) and isinstance(value.get("tasks"), list):
        return value["tasks"]
    if isinstance(value, list):
        return value
    raise BadFile(f"expected an array of tasks or {{'tasks': [...]}}, got {type(value).__name__}")


def quarantine(path: Path, quarantine_dir: Path) -> Path:
    """Copy `path` into `quarantine_dir` under a timestamped name; returns the copy."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    copy = quarantine_dir / f"{path.stem}-{stamp}-{time.monotonic_ns() % 1_000_000:06d}.json"
    shutil.copy2(path, copy)
    return copy
