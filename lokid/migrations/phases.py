"""Starting and advancing phases: read-modify-writes of the manifest under its lock.

Blocking (the lock, the files): worker threads only. Each function takes the
lock once, as the outermost operation, and calls only unlocked helpers inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lokid.domain import migration as rules
from lokid.errors import Conflict
from lokid.migrations.folder import MigrationFolder, phases_of
from lokid.migrations.lock import manifest_lock


@dataclass(frozen=True, slots=True)
class Started:
    started: bool  # False: the phase was already in progress and nothing was written
    manifest: dict[str, Any]


def start_phase(folder: MigrationFolder, phase: str, now: str, timeout: float) -> Started:
    folder.read_manifest()  # not_found before a lock file is made for nothing
    with manifest_lock(folder.path, timeout):
        manifest = folder.read_manifest()
        phases = rules.started(phases_of(manifest), phase, now)
        if phases is None:
            return Started(False, manifest)
        manifest["phases"] = phases
        folder.write_manifest(manifest)
        return Started(True, manifest)


def advance(folder: MigrationFolder, phase: str, now: str, timeout: float) -> dict[str, Any]:
    """Complete `phase` and start the next, or `conflict` with the reason.

    As in the engine, the gate is checked first, then that `phase` is in progress,
    both inside the lock, so two advances racing from any processes cannot both pass.
    """
    folder.read_manifest()
    with manifest_lock(folder.path, timeout):
        reason = rules.gate_to_leave(phase, folder.gate_facts(phase))
        if reason is not None:
            raise Conflict(reason, {"phase": phase})
        manifest = folder.read_manifest()
        phases = phases_of(manifest)
        problem = rules.advance_problem(phases, phase)
        if problem is not None:
            raise Conflict(problem, {"phase": phase, "status": rules.phase_status(phases, phase)})
        manifest["phases"] = rules.advanced(phases, phase, now)
        folder.write_manifest(manifest)
        return manifest
