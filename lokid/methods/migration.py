"""migration.*: thin handlers over the migrations area (lokid.migrations).

Each handler checks nothing itself: the area validates ids, phases and steps,
runs the lock, files and git in worker threads and raises the wire errors.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from lokid.domain.migration import Details
from lokid.migrations import MigrationArea
from lokid.server.dispatch import Call, Router
from lokid.wire import migrations as wire


class MigrationApp(Protocol):
    migrations: MigrationArea


router = Router()


def _area(call: Call[MigrationApp]) -> MigrationArea:
    return call.app.migrations


@router.method("migration.list", wire.ListParams)
async def migration_list(call: Call, p: wire.ListParams) -> wire.ListResult:
    return await _area(call).list()


@router.method("migration.get", wire.IdParams)
async def migration_get(call: Call, p: wire.IdParams) -> wire.GetResult:
    return await _area(call).get(p.id)


@router.method("migration.start_phase", wire.PhaseParams)
async def migration_start_phase(call: Call, p: wire.PhaseParams) -> wire.StartPhaseResult:
    return await _area(call).start_phase(p.id, p.phase)


@router.method("migration.advance", wire.PhaseParams)
async def migration_advance(call: Call, p: wire.PhaseParams) -> wire.AdvanceResult:
    return await _area(call).advance(p.id, p.phase)


@router.method("migration.progress", wire.ProgressParams)
async def migration_progress(call: Call, p: wire.ProgressParams) -> wire.ProgressResult:
    details = Details(**msgspec.structs.asdict(p.details)) if p.details is not None else None
    return await _area(call).progress(p.id, p.agent, p.summary, details)


@router.method("migration.checkpoint", wire.CheckpointParams)
async def migration_checkpoint(call: Call, p: wire.CheckpointParams) -> wire.CheckpointResult:
    return await _area(call).checkpoint(p.id, p.step)


@router.method("migration.rollback", wire.RollbackParams)
async def migration_rollback(call: Call, p: wire.RollbackParams) -> wire.RollbackResult:
    return await _area(call).rollback(p.id, p.step, p.confirm)
