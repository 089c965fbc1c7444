"""One watchfiles watcher for every watched project's `.loki/`, and the reactions.

It watches `.loki/` and the few folders in it whose files have a meaning,
each on its own: never `.loki/state/`, where lokid's database lives, since a
watch there would wake the watcher on every commit. The watcher restarts
when the set of folders changes (a project added or removed, a `.loki/` or
one of its folders created or deleted), and then catches up on what changed
while it was down (see ledger.py). It stops within one `step` on shutdown:
it is always handed a stop event, since cancelling watchfiles without one
waits up to its five-second rust timeout. A prober looks at each project
folder once a second, so a folder that disappears is marked missing instead
of breaking the watcher, and is watched again when it comes back; it also
polls the one file of `.loki/state/` that has a meaning. lokid's own writes
(the queue views) are recognised and not taken as outside edits.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import trio
import watchfiles

from lokid.docker.runs import Runs, runs_of
from lokid.errors import LokidError, Unavailable
from lokid.files import signals
from lokid.projects import Project
from lokid.watch.ledger import Ledger, folder_contents
from lokid.watch.meaning import FOLDERS, POLLED, Kind, Meaning, classify, signal_topic
from lokid.watch.tail import Tail
from lokid.wire.messages import UNDECODABLE

if TYPE_CHECKING:
    from lokid.daemon import Daemon

log = logging.getLogger("lokid.watch")

STATE_FILES = ("STOP", "PAUSE", "PAUSE_AT_CHECKPOINT")  # looked at when a watch begins
RESTART_COALESCE = 0.05  # seconds of quiet before the watcher restarts on a new set
PROBE_INTERVAL = 1.0  # seconds between looks at whether project folders still exist
RATE_LIMITED_WAIT = 60.0  # default slowdown when a RATE_LIMITED signal names no wait
_TYPE_CHARS = re.compile(r"[^a-z0-9_.-]+")


class WatchArea:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        settings = daemon.settings
        self.debounce_ms = settings.watch_debounce_ms
        self.step_ms = settings.watch_step_ms
        self.stop_signal_grace = settings.stop_signal_grace
        self._restart = trio.Event()
        self._tails: dict[str, Tail] = {}
        self._seen: dict[str, tuple[bool, bool]] = {}  # path -> (exists, has .loki)
        self._stopping_runs: set[str] = set()
        self._watching: frozenset[str] = frozenset()  # the folders being watched
        self._ledger = Ledger()
        self.batches = 0
        daemon.services.append(self.run)
        daemon.services.append(self.probe)
        daemon.projects.on_change.append(self.restart)

    # -- the watcher ---------------------------------------------------------------------

    def restart(self) -> None:
        """The set of folders to watch may have changed."""
        self._restart.set()

    def _targets(self) -> dict[str, Project]:
        """Each folder to watch -> its project: `.loki/`, and those of FOLDERS that exist."""
        targets: dict[str, Project] = {}
        for project in self.daemon.projects.watched():
            if project.loki.is_dir():
                targets[str(project.loki)] = project
                for name in sorted(FOLDERS):
                    if (folder := project.loki / name).is_dir():
                        targets[str(folder)] = project
        return targets

    async def run(self, daemon: Daemon) -> None:
        while not daemon.stopping:
            self._restart = trio.Event()
            targets = self._targets()
            projects = {project.path: project for project in targets.values()}
            fresh = {path for path, p in projects.items() if str(p.loki) not in self._watching}
            self._watching = frozenset(targets)
            self._ledger.keep(projects)
            for project in projects.values():
                if project.path not in self._tails:
                    tail = self._tails[project.path] = Tail(project.loki / "events.jsonl")
                    tail.start_at_end()
            if not targets:
                await self._wait_restart_or_stop()
                continue
            await self._watch(targets, fresh)
            # Projects are often added in a burst: one restart for the lot.
            await trio.sleep(RESTART_COALESCE)

    async def _wait_restart_or_stop(self) -> None:
        async with trio.open_nursery() as nursery:

            async def first(fn: Any) -> None:
                await fn()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first, self._restart.wait)
            nursery.start_soon(first, self.daemon.wait_stopping)

    async def _watch(self, targets: dict[str, Project], fresh: set[str]) -> None:
        stop = anyio.Event()

        def wanted(change: watchfiles.Change, path: str) -> bool:
            return self._meaning(targets, path) is not None

        async def pump() -> None:
            try:
                async for changes in watchfiles.awatch(
                    *targets,
                    watch_filter=wanted,
                    debounce=self.debounce_ms,
                    step=self.step_ms,
                    stop_event=stop,
                    recursive=False,
                    ignore_permission_denied=True,
                ):
                    self.batches += 1
                    await self._dispatch(targets, changes)
            except (OSError, RuntimeError) as exc:
                # A watched folder vanished under the watcher; the prober will restart it.
                log.info("watcher stopped: %s", exc)
                with trio.move_on_after(PROBE_INTERVAL):
                    await self._wait_restart_or_stop()
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:

            async def stopper() -> None:
                await self._wait_restart_or_stop()
                stop.set()  # watchfiles notices within one step

            nursery.start_soon(stopper)
            nursery.start_soon(pump)
            # watchfiles adds its inotify watches when the generator first runs, before
            # its first wait; two scheduling rounds later they are in place.
            await trio.sleep(0)
            await trio.sleep(0)
            projects = {project.path: project for project in targets.values()}
            log.info("watching %d project(s), %d folders", len(projects), len(targets))
            for path, project in projects.items():
                if path in fresh:
                    await self._look_inside(project)
                    self._ledger.baseline(path, project.loki)
                else:
                    await self._catch_up(project)

    @staticmethod
    def _meaning(targets: dict[str, Project], path: str) -> tuple[Project, Meaning] | None:
        head, sep, rest = path.partition("/.loki/")
        project = targets.get(head + "/.loki") if sep else None
        if project is None:
            return None
        meaning = classify(tuple(rest.split("/")))
        return None if meaning is None else (project, meaning)

    async def _dispatch(self, targets: dict[str, Project], changes: Iterable[tuple]) -> None:
        todo: dict[tuple[str, Meaning], tuple[Project, Path]] = {}
        for _change, path in sorted(changes, key=lambda c: c[1]):
            found = self._meaning(targets, path)
            if found is None:
                continue
            project, meaning = found
            if meaning.kind is Kind.FOLDER:
                self.restart()  # to watch it; then what it holds is caught up on
            else:
                todo[(project.path, meaning)] = (project, Path(path))
        for (_, meaning), (project, path) in todo.items():
            await self._react_safely(project, meaning, path)

    async def _react_safely(self, project: Project, meaning: Meaning, path: Path) -> None:
        """One project's files must never stop the watcher, let alone the daemon."""
        try:
            self._ledger.note(project.path, project.loki, path.relative_to(project.loki).parts)
            await self._react(project, meaning, path)
        except LokidError as exc:
            log.warning("reacting to %s: %s", path, exc.message)
        except Exception:
            log.exception("reacting to %s failed", path)

    async def _look_inside(self, project: Project) -> None:
        """A folder just put under watch: what it already holds counts as having appeared,
        so a signal made just before its watch was in place is not lost."""
        found = [((name,), m) for name in STATE_FILES if (m := classify((name,))) is not None]
        found += folder_contents(project.loki / "signals")
        found += [(("queue", "pending.json"), Meaning(Kind.PENDING))]
        for parts, meaning in found:
            path = project.loki.joinpath(*parts)
            if path.exists():
                await self._react_safely(project, meaning, path)

    async def _catch_up(self, project: Project, only: Iterable[tuple[str, ...]] | None = None):
        """React to what changed while nobody watched (a restart, an unwatched folder)."""
        for parts in self._ledger.changes(project.path, project.loki, only):
            meaning = classify(parts)
            if meaning is not None:
                await self._react_safely(project, meaning, project.loki.joinpath(*parts))

    # -- reactions -----------------------------------------------------------------------

    def _publish(self, topic: str, project: Project, data: Any) -> None:
        self.daemon.hub.publish(topic, project.path, data)

    async def _react(self, project: Project, meaning: Meaning, path: Path) -> None:
        kind = meaning.kind
        present = path.exists()
        if kind is Kind.STOP:
            if present:
                self._publish("signal.stop", project, {"file": "STOP"})
                self.daemon.spawn(self._stop_run_after_grace, project)
        elif kind in (Kind.PAUSE, Kind.PAUSE_AT_CHECKPOINT):
            topic = "signal.pause" if present else "signal.resume"
            self._publish(topic, project, {"file": path.name})
        elif kind is Kind.SIGNAL:
            await self._signal(project, meaning.name or path.name, path, present)
        elif kind is Kind.PENDING:
            views = self.daemon.queues.views(project)
            if present and not views.is_own_write(path):
                imported, skipped, _ = await views.import_now()
                log.info(
                    "pending.json changed in %s: imported %d, skipped %d",
                    project.path,
                    imported,
                    skipped,
                )
        elif kind is Kind.BREAKER_CONFIG:
            self.daemon.queues.reload(project)
        elif kind is Kind.PRD:
            self._publish("prd.changed", project, _prd_provenance(project, path))
        elif kind is Kind.RUN_FILE:
            await self._reconcile_runs()
        elif kind is Kind.EVENTS_LOG:
            self._loki_events(project)
        elif kind is Kind.DASHBOARD and present:
            status = dashboard_status(path)
            if status is not None:
                self._publish("status.changed", project, status)

    async def _signal(self, project: Project, name: str, path: Path, present: bool) -> None:
        content = signals.signal_content(path) if present else None
        data = {"name": name, "present": present, "content": content}
        self._publish(signal_topic(name), project, data)
        if name.removesuffix(".json") == "RATE_LIMITED" and present:
            wait = RATE_LIMITED_WAIT
            if isinstance(content, dict):
                given = content.get("wait", content.get("retryAfter", content.get("retry_after")))
                if isinstance(given, int | float) and given >= 0:
                    wait = float(given)
            self._publish("queue.slowdown", project, {"type": None, "wait": wait / 2})

    def _loki_events(self, project: Project) -> None:
        tail = self._tails.get(project.path)
        if tail is None:
            return
        for record in tail.read():
            if not isinstance(record, dict):
                continue
            kind = _TYPE_CHARS.sub("-", str(record.get("type") or "event").lower()).strip("-")
            self._publish(f"loki.{kind or 'event'}", project, record)

    def _runs(self) -> Runs | None:
        try:
            return runs_of(self.daemon)
        except Unavailable:
            return None

    async def _reconcile_runs(self) -> None:
        runs = self._runs()
        if runs is not None:
            await runs.reconcile()

    async def _stop_run_after_grace(self, project: Project) -> None:
        """STOP reaches the container lifecycle: after the grace, the run is stopped
        through the same path as `run.stop` (Loki Mode inside may have exited already)."""
        if project.path in self._stopping_runs:
            return
        self._stopping_runs.add(project.path)
        try:
            await trio.sleep(self.stop_signal_grace)
            runs = self._runs()
            if runs is None:
                return
            result = await runs.stop(project, None)
            self._publish("signal.stop-done", project, {"stopped": list(result.stopped)})
        except LokidError as exc:
            log.warning("STOP in %s: could not stop the run: %s", project.path, exc.message)
        finally:
            self._stopping_runs.discard(project.path)

    # -- the prober ----------------------------------------------------------------------

    async def probe(self, daemon: Daemon) -> None:
        while True:
            self.look()
            for project in self.daemon.projects.watched():
                await self._catch_up(project, POLLED)
            await trio.sleep(PROBE_INTERVAL)

    def look(self) -> None:
        """Notice folders that went missing or came back, and `.loki/` created or deleted."""
        for project in self.daemon.projects.watched():
            now = (project.exists(), project.loki.is_dir())
            # A project is only ever added while its folder exists.
            before = self._seen.get(project.path, (True, now[1]))
            self._seen[project.path] = now
            if before[0] != now[0]:
                project.missing = not now[0]
                topic = "project.missing" if project.missing else "project.restored"
                if project.missing:
                    self.daemon.queues.forget(project)
                log.info("%s: %s", topic, project.path)
                self._publish(topic, project, {"path": project.path})
        if frozenset(self._targets()) != self._watching:
            self.restart()


def _read_json(path: Path) -> Any:
    try:
        return msgspec.json.decode(path.read_bytes())
    except (OSError, *UNDECODABLE):
        return None


def _prd_provenance(project: Project, changed: Path) -> dict[str, Any]:
    signature = _read_json(project.loki / "state" / "prd-signature.json")
    fields = ("source", "prd_sha", "signature", "origin_path")
    info = {k: signature.get(k) for k in fields} if isinstance(signature, dict) else {}
    return {"file": str(changed.relative_to(project.loki)), **dict.fromkeys(fields), **info}


def dashboard_status(path: Path) -> dict[str, Any] | None:
    """`status.changed`'s data from `.loki/dashboard-state.json` (None when unreadable)."""
    state = _read_json(path)
    if not isinstance(state, dict):
        return None
    tasks = state.get("tasks") if isinstance(state.get("tasks"), dict) else {}
    counts = {k: len(v) for k, v in tasks.items() if isinstance(v, list)}
    return {
        "mode": state.get("mode"),
        "phase": state.get("phase"),
        "iteration": state.get("iteration"),
        "tasks": counts,
    }


def with_watch(daemon: Daemon) -> Daemon:
    daemon.watch = WatchArea(daemon)
    return daemon
