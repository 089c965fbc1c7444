"""The migrations area: Loki Mode's `~/.loki/migrations/<id>/`, served and watched.

    MigrationArea(root, publish)
    ├── run()       the watcher for the daemon's life: migration.* events for every
    │               change, whoever made it (news.py, watcher.py)
    ├── reload()    SIGHUP: watch afresh and look at every migration again
    ├── idle()      no request is in a worker thread
    ├── close()     stop the watcher (within one watchfiles step)
    └── list, get, start_phase, advance, progress, checkpoint, rollback:
                    one per wire method; arguments are checked on the trio thread,
                    the lock, files and git run in worker threads (trio.to_thread)

Errors (lokid.errors): a malformed id, unknown phase, bad step or rollback without
confirmation → InvalidParams; no such migration → NotFound; a failing gate or a
phase not in progress → Conflict (the engine's reason); the manifest lock held
elsewhere past `lock_timeout` → Unavailable naming the lock file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import trio

from lokid.domain import migration as rules
from lokid.domain.migration import Details
from lokid.errors import InvalidParams, NotFound, Unavailable
from lokid.migrations import checkpoints, phases, progress
from lokid.migrations.folder import MigrationFolder, phases_of, source_of, target_of
from lokid.migrations.lock import TIMEOUT
from lokid.migrations.news import Seen, news, seen_of
from lokid.migrations.watcher import FolderWatch, ids_in
from lokid.wire import migrations as wire

log = logging.getLogger("lokid.migrations")

Publish = Callable[[str, str | None, Any], None]
T = TypeVar("T")

# A batch 50 ms after the last change, at most 200 ms into a burst. Migrations move at
# the pace of people and agents, and the watcher's thread wakes once a step even when
# nothing changes: 5 ms (the project watcher's) cost an idle lokid ~0.4% of a core.
DEBOUNCE_MS = 200
STEP_MS = 50

# Requests in worker threads at once; more wait on the trio side (cancellable). A lock held
# elsewhere keeps each waiting request's thread for up to lock_timeout, and those threads must
# not be the ones the rest of the daemon runs its blocking work on (trio's default limiter).
THREADS = 8

_UNREADABLE = object()  # a manifest mid-write by a tool that takes no lock: look again later


def default_root() -> Path:
    """`~/.loki/migrations`, from lokid's HOME, where `loki migrate` keeps them."""
    return Path.home() / ".loki" / "migrations"


def loki_now() -> str:
    """Now as Loki Mode's engine writes times (`datetime.now(timezone.utc).isoformat()`)."""
    return datetime.now(UTC).isoformat()


def _nowhere(topic: str, project: str | None, data: Any) -> None:
    pass


class MigrationArea:
    def __init__(
        self,
        root: Path | None = None,
        publish: Publish = _nowhere,
        *,
        lock_timeout: float = TIMEOUT,
        debounce_ms: int = DEBOUNCE_MS,
        step_ms: int = STEP_MS,
        clock: Callable[[], str] = loki_now,
    ) -> None:
        self.root = root if root is not None else default_root()
        self.publish = publish
        self.lock_timeout = lock_timeout
        self._clock = clock
        self._seen: dict[str, Seen] = {}
        self._looking = trio.Lock()  # one look at a time, so none applies a staler one
        self._busy = 0
        self._threads = trio.CapacityLimiter(THREADS)
        self._watch = FolderWatch(self.root, self._look, debounce_ms, step_ms)

    # -- the area's life -----------------------------------------------------------------

    async def run(self) -> None:
        """Watch for the daemon's life. What exists at the start is the baseline (no
        events); everything after it is news."""
        await self._look(None, announce=False)
        await self._watch.run()

    def reload(self) -> None:
        self._watch.restart()

    def idle(self) -> bool:
        return self._busy == 0

    def close(self) -> None:
        self._watch.close()

    @property
    def watching(self) -> Path | None:
        """The folder being watched now: `root`, or an ancestor while it does not exist."""
        return self._watch.watching

    # -- the wire methods ----------------------------------------------------------------

    async def list(self) -> wire.ListResult:
        return await self._thread(self._list)

    async def get(self, migration_id: str) -> wire.GetResult:
        folder = MigrationFolder.checked(self.root, migration_id)
        return await self._thread(self._get, folder)

    async def start_phase(self, migration_id: str, phase: str) -> wire.StartPhaseResult:
        folder, phase = self._folder_and_phase(migration_id, phase)
        done = await self._thread(
            phases.start_phase, folder, phase, self._clock(), self.lock_timeout
        )
        return wire.StartPhaseResult(
            folder.id, phase, done.started, _phase_infos(phases_of(done.manifest))
        )

    async def advance(self, migration_id: str, phase: str) -> wire.AdvanceResult:
        folder, phase = self._folder_and_phase(migration_id, phase)
        now = self._clock()
        manifest = await self._thread(phases.advance, folder, phase, now, self.lock_timeout)
        infos = _phase_infos(phases_of(manifest))
        return wire.AdvanceResult(folder.id, phase, rules.next_phase(phase), now, infos)

    async def progress(
        self, migration_id: str, agent: str, summary: str, details: Details | None = None
    ) -> wire.ProgressResult:
        folder = MigrationFolder.checked(self.root, migration_id)
        problem = rules.progress_problem(agent, summary, details)
        if problem is not None:
            raise InvalidParams(problem)
        now = self._clock()
        done = await self._thread(
            progress.append, folder, agent, summary, details, now, self.lock_timeout
        )
        return wire.ProgressResult(folder.id, now, done.phase, done.sessions)

    async def checkpoint(self, migration_id: str, step: str) -> wire.CheckpointResult:
        folder = self._folder_and_step(migration_id, step)
        made = await self._thread(
            checkpoints.create, folder, step, self._clock(), self.lock_timeout
        )
        return wire.CheckpointResult(folder.id, step, made.tag, made.commit, made.created_at)

    async def rollback(self, migration_id: str, step: str, confirm: bool) -> wire.RollbackResult:
        """`git reset --hard` the codebase to step's checkpoint: destroys uncommitted
        changes to tracked files and moves the branch back. Only with `confirm`."""
        folder = self._folder_and_step(migration_id, step)
        if confirm is not True:
            raise InvalidParams(
                "rollback runs `git reset --hard` in the codebase and destroys uncommitted"
                " work: send confirm: true to do it"
            )
        done = await self._thread(checkpoints.rollback, folder, step)
        result = wire.RollbackResult(folder.id, step, done.tag, done.head, done.previous_head)
        # Not a change to the migration's files, so the watcher cannot see it: said here.
        event = wire.RolledBackEvent(**msgspec.structs.asdict(result))
        self.publish("migration.rolled-back", done.codebase, event)
        return result

    # -- helpers -------------------------------------------------------------------------

    def _folder_and_phase(self, migration_id: str, phase: str) -> tuple[MigrationFolder, str]:
        folder = MigrationFolder.checked(self.root, migration_id)
        problem = rules.phase_problem(phase)
        if problem is not None:
            raise InvalidParams(problem)
        return folder, phase

    def _folder_and_step(self, migration_id: str, step: str) -> MigrationFolder:
        folder = MigrationFolder.checked(self.root, migration_id)
        problem = rules.step_problem(step)
        if problem is not None:
            raise InvalidParams(problem)
        return folder

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking work (the lock, files, git) off the event loop; counted for idle()."""
        self._busy += 1
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._threads)
        finally:
            self._busy -= 1

    def _list(self) -> wire.ListResult:
        out = []
        for migration_id in sorted(ids_in(self.root)):
            folder = MigrationFolder(self.root, migration_id)
            try:
                manifest = folder.read_manifest()
            except (NotFound, Unavailable) as exc:
                log.info("migration.list skips %s: %s", migration_id, exc)
                continue
            created = manifest.get("created_at")
            out.append(
                wire.MigrationInfo(
                    id=migration_id,
                    created_at=created if isinstance(created, str) and created else None,
                    source=source_of(manifest),
                    target=target_of(manifest),
                    status=rules.overall_status(phases_of(manifest)),
                    current_phase=rules.current_phase(phases_of(manifest)),
                )
            )
        return wire.ListResult(out)

    def _get(self, folder: MigrationFolder) -> wire.GetResult:
        manifest = folder.read_manifest()
        s = folder.summary(manifest)
        last = s.last_checkpoint
        summary = wire.Progress(
            status=s.status,
            current_phase=s.current_phase,
            completed_phases=s.completed_phases,
            features=wire.Count(s.features_passing, s.features_total),
            steps=wire.Steps(s.steps_current, s.steps_completed, s.steps_total),
            current_step=s.current_step,
            last_checkpoint=wire.LastCheckpoint(last.tag, last.step_id, last.timestamp)
            if last
            else None,
            checkpoints_count=s.checkpoints_count,
        )
        return wire.GetResult(
            id=folder.id,
            path=str(folder.path),
            source=source_of(manifest),
            target=target_of(manifest),
            phases=_phase_infos(phases_of(manifest)),
            progress=summary,
            manifest=manifest,
        )

    # -- the watcher's looks -------------------------------------------------------------

    async def _look(self, ids: set[str] | None, announce: bool = True) -> None:
        """Read the migrations `ids` (None: every one there is or was), compare each with
        what was seen before and publish the difference."""
        async with self._looking:
            looks = await trio.to_thread.run_sync(self._read_looks, ids, set(self._seen))
            self._apply(looks, announce)

    def _apply(self, looks: dict[str, object], announce: bool) -> None:
        for migration_id, look in sorted(looks.items()):
            if look is _UNREADABLE:
                continue  # keep the last good look; the file's next change brings a new one
            new = look if isinstance(look, Seen) else None
            old = self._seen.pop(migration_id, None)
            if new is not None:
                self._seen[migration_id] = new
            if announce:
                either = new or old
                project = either.project if either is not None else None
                for topic, data in news(migration_id, old, new):
                    self.publish(topic, project, data)

    def _read_looks(self, ids: set[str] | None, known: set[str]) -> dict[str, object]:
        if ids is None:
            ids = known | set(ids_in(self.root))
        return {migration_id: self._read_look(migration_id) for migration_id in ids}

    def _read_look(self, migration_id: str) -> object:
        folder = MigrationFolder(self.root, migration_id)
        try:
            return seen_of(folder.read_manifest(), folder.read_progress())
        except NotFound:
            return None
        except Unavailable as exc:
            log.debug("migration %s not readable now: %s", migration_id, exc.message)
            return _UNREADABLE


def _phase_infos(phases: dict[str, Any]) -> list[wire.PhaseInfo]:
    out = []
    for phase in rules.PHASES:
        entry = rules.phase_entry(phases, phase)
        started, completed = entry.get("started_at"), entry.get("completed_at")
        out.append(
            wire.PhaseInfo(
                phase,
                rules.phase_status(phases, phase),
                started if isinstance(started, str) and started else None,
                completed if isinstance(completed, str) and completed else None,
            )
        )
    return out
