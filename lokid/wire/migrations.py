"""Params, results and event data of migration.* (PROTOCOL.md, "Migrations").

Times inside a migration (`created_at`, a phase's `started_at`, a session's `at`)
are Loki Mode's own strings, passed through as its files hold them
(`2026-02-23T14:30:52.123456+00:00`); an empty one in the file is nil here.
"""

from typing import Any

import msgspec

# -- params ------------------------------------------------------------------------------


class ListParams(msgspec.Struct, forbid_unknown_fields=True):
    pass


class IdParams(msgspec.Struct, forbid_unknown_fields=True):
    id: str


class PhaseParams(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    phase: str


class ProgressDetails(msgspec.Struct, forbid_unknown_fields=True):
    # Each becomes a line of the session when given and not empty (or 0), as in Loki Mode.
    steps_completed: str | int | None = None
    tests_passing: str | int | None = None
    notes: str | None = None


class ProgressParams(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    agent: str
    summary: str
    details: ProgressDetails | None = None


class CheckpointParams(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    step: str


class RollbackParams(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    step: str
    # `git reset --hard` destroys uncommitted work in the codebase: only with true.
    confirm: bool = False


# -- results -----------------------------------------------------------------------------


class PhaseInfo(msgspec.Struct):
    phase: str
    status: str  # pending | in_progress | completed (failed, when another tool wrote it)
    started_at: str | None
    completed_at: str | None


class MigrationInfo(msgspec.Struct):
    """One line of `migration.list`."""

    id: str
    created_at: str | None
    source: str  # the codebase being migrated
    target: str
    status: str  # pending | in_progress | completed | failed, derived from the phases
    current_phase: str  # a phase name, or "pending" before any started


class ListResult(msgspec.Struct):
    migrations: list[MigrationInfo]


class Count(msgspec.Struct):
    passing: int
    total: int


class Steps(msgspec.Struct):
    current: int  # 1-based index of the step being worked on; 0 without a plan
    completed: int
    total: int


class LastCheckpoint(msgspec.Struct):
    tag: str
    step_id: str
    timestamp: str


class Progress(msgspec.Struct):
    """What Loki Mode's dashboard shows of a migration."""

    status: str
    current_phase: str
    completed_phases: list[str]
    features: Count
    steps: Steps
    current_step: str | None
    last_checkpoint: LastCheckpoint | None
    checkpoints_count: int


class GetResult(msgspec.Struct):
    id: str
    path: str  # the migration's folder
    source: str
    target: str
    phases: list[PhaseInfo]  # in order: understand, guardrail, migrate, verify
    progress: Progress
    manifest: dict[str, Any]  # manifest.json as stored, every key


class StartPhaseResult(msgspec.Struct):
    id: str
    phase: str
    started: bool  # false: it was already in progress; nothing changed
    phases: list[PhaseInfo]


class AdvanceResult(msgspec.Struct):
    id: str
    phase: str  # the phase completed
    next: str | None  # the phase now in progress; nil after verify
    completed_at: str
    phases: list[PhaseInfo]


class ProgressResult(msgspec.Struct):
    id: str
    at: str  # the session's time
    phase: str  # the phase it was filed under
    sessions: int  # sessions in progress.md now (at most 51: Loki Mode's cap)


class CheckpointResult(msgspec.Struct):
    id: str
    step: str
    tag: str
    commit: str
    created_at: str


class RollbackResult(msgspec.Struct):
    id: str
    step: str
    tag: str
    head: str  # the commit the codebase is at now
    previous_head: str | None  # where it was; nil on a branch without commits


# -- event data (topic: struct) ----------------------------------------------------------


class CreatedEvent(msgspec.Struct):
    id: str
    source: str
    target: str
    created_at: str | None


class PhaseStartedEvent(msgspec.Struct):
    id: str
    phase: str
    started_at: str | None


class AdvancedEvent(msgspec.Struct):
    id: str
    phase: str
    next: str | None
    completed_at: str | None


class PhaseChangedEvent(msgspec.Struct):
    id: str
    phase: str
    status: str
    previous: str


class CheckpointEvent(msgspec.Struct):
    id: str
    step: str | None
    tag: str


class ProgressEvent(msgspec.Struct):
    id: str
    at: str
    agent: str
    phase: str
    summary: str


class RemovedEvent(msgspec.Struct):
    id: str


class RolledBackEvent(msgspec.Struct):
    id: str
    step: str
    tag: str
    head: str
    previous_head: str | None


EVENTS: dict[str, type] = {
    "migration.created": CreatedEvent,
    "migration.phase-started": PhaseStartedEvent,
    "migration.advanced": AdvancedEvent,
    "migration.phase-changed": PhaseChangedEvent,
    "migration.checkpoint": CheckpointEvent,
    "migration.progress": ProgressEvent,
    "migration.removed": RemovedEvent,
    "migration.rolled-back": RolledBackEvent,
}
