"""What lokid does about a change the watcher saw in a project's `.loki/`.

The watcher only says which file changed and what it means (`watch.meaning`); this is where
the areas meet: a STOP reaches the run area, an outside edit of `pending.json` the queue
area, every change becomes an event. The composition root (`app.py`) builds it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import trio

from lokid.docker.area import RunArea
from lokid.files import signals
from lokid.files.dashboard import dashboard_status, prd_provenance
from lokid.files.reading import FileProblem, exists
from lokid.hub import Hub
from lokid.lifecycle import Spawner
from lokid.projects import Project
from lokid.queue.area import QueueArea
from lokid.watch.meaning import Kind, Meaning, signal_topic
from lokid.watch.tail import Tail
from lokid.wire import events as ev

log = logging.getLogger("lokid.watch")

RATE_LIMITED_WAIT = 60.0  # default slowdown when a RATE_LIMITED signal names no wait
_TYPE_CHARS = re.compile(r"[^a-z0-9_.-]+")


class Reactions:
    def __init__(self, hub: Hub, queues: QueueArea, runs: RunArea | None, spawn: Spawner) -> None:
        self._hub = hub
        self._queues = queues
        self._runs = runs
        self._spawn = spawn
        self._tails: dict[str, Tail] = {}

    def watching(self, project: Project) -> None:
        """Follow `events.jsonl` from its end: only lines appended from now on count."""
        if project.path not in self._tails:  # start_at_end never raises: see Tail
            tail = self._tails[project.path] = Tail(project.loki / "events.jsonl")
            tail.start_at_end()

    def trouble(self, project: Project, error: str | None) -> None:
        """Say once when a project's files become unusable, and once when they are again."""
        if project.problem == error:
            return
        project.problem = error
        if error is not None:
            log.warning("project %s: %s; lokid serves the other projects", project.path, error)
        else:
            log.info("project %s: its files can be used again", project.path)
        self._hub.emit(project.path, ev.ProjectProblem(path=project.path, error=error))

    def missing(self, project: Project) -> None:
        self._queues.forget(project)
        self._hub.emit(project.path, ev.ProjectMissing(path=project.path))

    def restored(self, project: Project) -> None:
        self._hub.emit(project.path, ev.ProjectRestored(path=project.path))

    async def changed(self, project: Project, meaning: Meaning, path: Path) -> None:
        kind = meaning.kind
        present = exists(path)
        if kind is Kind.STOP:
            if present:
                self._hub.emit(project.path, ev.SignalStop(file="STOP"))
                if self._runs is not None:
                    self._spawn(self._runs.stop_file.honour, project)
        elif kind in (Kind.PAUSE, Kind.PAUSE_AT_CHECKPOINT):
            event = ev.SignalPause if present else ev.SignalResume
            self._hub.emit(project.path, event(file=path.name))
        elif kind is Kind.SIGNAL:
            await self._signal(project, meaning.name or path.name, path, present)
        elif kind is Kind.PENDING:
            views = self._queues.views(project)
            if present and not views.is_own_write(path):
                imported, skipped, _ = await views.import_now(wait=False)
                log.info(
                    "pending.json changed in %s: imported %d, skipped %d",
                    project.path,
                    imported,
                    skipped,
                )
        elif kind is Kind.QUEUE_FILE:
            if not self._queues.is_own_write(project, path):
                self._queues.restore_views(project, path.name)
        elif kind is Kind.RUN_PID:
            self._queues.restore_views(project, "in-progress.json")  # in or out, see views.py
        elif kind is Kind.BREAKER_CONFIG:
            self._queues.reload_project(project)
        elif kind is Kind.PRD:
            self._hub.emit(project.path, prd_provenance(project.loki, path))
        elif kind is Kind.RUN_FILE:
            if self._runs is not None:
                await self._runs.reconciler.reconcile()
        elif kind is Kind.EVENTS_LOG:
            self._loki_events(project)
        elif kind is Kind.DASHBOARD and present:
            status = await trio.to_thread.run_sync(dashboard_status, path)
            if status is not None:
                self._hub.emit(project.path, status)

    async def _signal(self, project: Project, name: str, path: Path, present: bool) -> None:
        content = signals.signal_content(path) if present else None
        data = ev.SignalFile(name=name, present=present, content=content)
        self._hub.publish(signal_topic(name), project.path, data)
        if name.removesuffix(".json") == "RATE_LIMITED" and present:
            wait = RATE_LIMITED_WAIT
            if isinstance(content, dict):
                given = content.get("wait", content.get("retryAfter", content.get("retry_after")))
                if isinstance(given, int | float) and given >= 0:
                    wait = float(given)
            self._hub.emit(project.path, ev.QueueSlowdown(type=None, wait=wait / 2))

    def _loki_events(self, project: Project) -> None:
        tail = self._tails.get(project.path)
        if tail is None:
            return
        try:
            records = tail.read()
        except FileProblem as exc:
            self.trouble(project, exc.message)
            return
        for record in records:
            if not isinstance(record, dict):
                continue
            self._hub.publish(_loki_topic(record), project.path, record)


def _loki_topic(record: dict[str, Any]) -> str:
    """`loki.<type>`: the line's `type`, lower-cased, reduced to topic characters."""
    kind = _TYPE_CHARS.sub("-", str(record.get("type") or "event").lower()).strip("-")
    return f"loki.{kind or 'event'}"
