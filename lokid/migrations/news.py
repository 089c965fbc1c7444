"""What changed in a migration between two looks: the watcher's events.

The watcher keeps a `Seen` of each migration (its phases, checkpoints and
progress sessions) and, when its files change, compares the new look with the
old one. Events come from the difference, never from who wrote, so lokid's own
changes, the dashboard's and the `loki migrate` CLI's are reported alike, each
once. Changes that land within one watcher batch are compared as one step (a
phase started and completed between two looks shows as completed). Pure: no I/O.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import msgspec

from lokid.domain import migration as rules
from lokid.migrations.folder import checkpoints_of, phases_of, source_of, target_of
from lokid.wire.migrations import (
    AdvancedEvent,
    CheckpointEvent,
    CreatedEvent,
    PhaseChangedEvent,
    PhaseStartedEvent,
    ProgressEvent,
    RemovedEvent,
)

News = list[tuple[str, msgspec.Struct]]


@dataclass(frozen=True, slots=True)
class Seen:
    source: str
    target: str
    created_at: str | None
    phases: tuple[tuple[str, str, str], ...]  # (status, started_at, completed_at) per phase
    checkpoints: tuple[str, ...]
    sessions: tuple[str, ...]  # progress.md's raw session blocks

    @property
    def project(self) -> str | None:
        """The codebase, as the events' `project` (nil unless an absolute path)."""
        return self.source if os.path.isabs(self.source) else None


def seen_of(manifest: dict[str, Any], progress: str | None) -> Seen:
    phases = phases_of(manifest)
    created = manifest.get("created_at")
    return Seen(
        source=source_of(manifest),
        target=target_of(manifest),
        created_at=created if isinstance(created, str) and created else None,
        phases=tuple(_phase(rules.phase_entry(phases, p), phases, p) for p in rules.PHASES),
        checkpoints=tuple(checkpoints_of(manifest)),
        sessions=tuple(rules.session_blocks(progress or "")),
    )


def _phase(entry: dict[str, Any], phases: dict[str, Any], phase: str) -> tuple[str, str, str]:
    return (
        rules.phase_status(phases, phase),
        _text(entry, "started_at"),
        _text(entry, "completed_at"),
    )


def _text(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    return value if isinstance(value, str) else ""


def news(migration_id: str, old: Seen | None, new: Seen | None) -> News:
    """The events that take a migration from `old` to `new` (None: it does not exist)."""
    if new is None:
        return [] if old is None else [("migration.removed", RemovedEvent(migration_id))]
    if old is None:
        created = CreatedEvent(migration_id, new.source, new.target, new.created_at)
        return [("migration.created", created)]
    return (
        _phase_news(migration_id, old, new)
        + [
            ("migration.checkpoint", CheckpointEvent(migration_id, rules.tag_step(tag), tag))
            for tag in _added(old.checkpoints, new.checkpoints)
        ]
        + [
            ("migration.progress", _progress_event(migration_id, block))
            for block in _added(old.sessions, new.sessions)
        ]
    )


def _phase_news(migration_id: str, old: Seen, new: Seen) -> News:
    out: News = []
    announced: set[str] = set()  # phases an `advanced` event already names as `next`
    for index, phase in enumerate(rules.PHASES):
        before, after = old.phases[index], new.phases[index]
        if before == after:
            continue
        status, started_at, completed_at = after
        if status == "completed":
            following = rules.next_phase(phase)
            if following is not None and new.phases[index + 1][0] != "in_progress":
                following = None
            announced.add(following or "")
            event = AdvancedEvent(migration_id, phase, following, completed_at or None)
            out.append(("migration.advanced", event))
        elif status == "in_progress":
            if phase not in announced:
                event = PhaseStartedEvent(migration_id, phase, started_at or None)
                out.append(("migration.phase-started", event))
        elif status != before[0]:
            event = PhaseChangedEvent(migration_id, phase, status, before[0])
            out.append(("migration.phase-changed", event))
    return out


def _added(old: tuple[str, ...], new: tuple[str, ...]) -> list[str]:
    """Items of `new` beyond those `old` had (a multiset difference, in `new`'s order):
    progress.md's oldest sessions falling off the cap are not news."""
    left = Counter(old)
    out = []
    for item in new:
        if left[item] > 0:
            left[item] -= 1
        else:
            out.append(item)
    return out


def _progress_event(migration_id: str, block: str) -> ProgressEvent:
    session = rules.parse_session(block)
    return ProgressEvent(migration_id, session.at, session.agent, session.phase, session.summary)
