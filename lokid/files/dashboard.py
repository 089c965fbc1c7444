"""Loki Mode's run-state files as lokid reports them: `.loki/dashboard-state.json` (the
dashboard's picture of the run) and `.loki/state/prd-signature.json` (where the PRD came
from)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from lokid.files.reading import STATE_FILE_MAX, FileProblem, read_file
from lokid.wire.events import PrdChanged, StatusChanged
from lokid.wire.messages import UNDECODABLE


def _read_json(path: Path) -> Any:
    """The file's JSON; None when it is missing, unusable (see reading.py) or not JSON."""
    try:
        data = read_file(path, STATE_FILE_MAX)
        return None if data is None else msgspec.json.decode(data)
    except (FileProblem, *UNDECODABLE):
        return None


def dashboard_status(path: Path) -> StatusChanged | None:
    """`status.changed`'s data from `dashboard-state.json` (None when unreadable)."""
    state = _read_json(path)
    if not isinstance(state, dict):
        return None
    tasks = state.get("tasks") if isinstance(state.get("tasks"), dict) else {}
    return StatusChanged(
        mode=state.get("mode"),
        phase=state.get("phase"),
        iteration=state.get("iteration"),
        tasks={k: len(v) for k, v in tasks.items() if isinstance(v, list)},
    )


def prd_provenance(loki: Path, changed: Path) -> PrdChanged:
    """`prd.changed`'s data: the file that changed and where the PRD came from."""
    signature = _read_json(loki / "state" / "prd-signature.json")
    info = signature if isinstance(signature, dict) else {}
    return PrdChanged(
        file=str(changed.relative_to(loki)),
        source=info.get("source"),
        prd_sha=info.get("prd_sha"),
        signature=info.get("signature"),
        origin_path=info.get("origin_path"),
    )
