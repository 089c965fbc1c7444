"""project.add|remove|list|status and signal.pause|resume|stop."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Protocol

import trio

from lokid.docker.area import RunArea
from lokid.errors import LokidError, NotFound, unavailable_file
from lokid.files import signals
from lokid.files.dashboard import dashboard_status
from lokid.projects import Project, Projects
from lokid.queue.area import QueueArea
from lokid.server.dispatch import Call, Router
from lokid.watch.watcher import Watcher
from lokid.wire.daemon import Empty
from lokid.wire.projects import (
    PathParams,
    Paused,
    ProjectInfo,
    ProjectList,
    ProjectOne,
    ProjectParams,
    ProjectStatus,
    Removed,
    Stopping,
)


class ProjectApp(Protocol):
    projects: Projects
    queues: QueueArea
    runs: RunArea | None
    watcher: Watcher


router = Router()
PCall = Call[ProjectApp]

# How long `project.add` waits for its watches to be in place before answering anyway.
SETTLE_TIMEOUT = 5.0


def _queue_counts(call: PCall, project: Project) -> dict[str, int] | None:
    if not project.loki.is_dir():
        return None
    return call.app.queues.open(project).stats().states


async def _run(call: PCall, project: Project) -> tuple[Any, str | None]:
    if call.app.runs is None:
        return None, "container runs are not enabled in this lokid"
    try:
        return await call.app.runs.runs.status(project), None
    except LokidError as exc:
        return None, exc.message


async def _info(call: PCall, project: Project) -> ProjectInfo:
    run, _ = await _run(call, project)
    return ProjectInfo(
        path=project.path,
        name=project.name,
        has_loki=project.loki.is_dir(),
        watched=project.watched,
        missing=not project.exists(),
        run=run,
        queue=_queue_counts(call, project),
    )


@router.method("project.add", PathParams)
async def add(call: PCall, p: PathParams) -> ProjectOne:
    """Answers once the project's `.loki/` is under watch: a client's next write is seen."""
    project = call.app.projects.add(p.path)
    with trio.move_on_after(SETTLE_TIMEOUT):
        await call.app.watcher.settled(project)
    return ProjectOne(await _info(call, project))


@router.method("project.remove", PathParams)
def remove(call: PCall, p: PathParams) -> Removed:
    return Removed(call.app.projects.remove(p.path))


@router.method("project.list", Empty)
async def list_projects(call: PCall, p: Empty) -> ProjectList:
    return ProjectList([await _info(call, proj) for proj in call.app.projects.watched()])


@router.method("project.status", ProjectParams)
async def status(call: PCall, p: ProjectParams) -> ProjectStatus:
    project = call.app.projects.use(p.project)
    has_loki = project.loki.is_dir()
    run, run_error = await _run(call, project)
    breakers: dict[str, Any] = {}
    if has_loki:
        queue = call.app.queues.open(project)
        with queue.transaction():
            breakers = dict(queue.breakers.listing(queue.clock()))
    dashboard = await trio.to_thread.run_sync(
        dashboard_status, project.loki / "dashboard-state.json"
    )
    return ProjectStatus(
        path=project.path,
        name=project.name,
        has_loki=has_loki,
        watched=project.watched,
        missing=not project.exists(),
        paused=signals.is_paused(project.loki),
        stopping=signals.is_stopping(project.loki),
        signals=signals.signal_names(project.loki),
        run=run,
        run_error=run_error,
        queue=_queue_counts(call, project),
        breakers=breakers,
        dashboard=dashboard,
        events=list(project.recent),
    )


def _existing(call: PCall, path: str) -> Project:
    project = call.app.projects.use(path)
    if not project.exists():
        raise NotFound(f"project folder {path} does not exist")
    return project


def _touch(call: PCall, project: str, name: str) -> None:
    path = _existing(call, project).loki / name
    try:
        signals.touch(path)
    except OSError as exc:
        raise unavailable_file(f"create {path}", exc) from exc


@router.method("signal.pause", ProjectParams)
def pause(call: PCall, p: ProjectParams) -> Paused:
    """Create `.loki/PAUSE`, as `loki pause` does; the watcher announces it."""
    _touch(call, p.project, "PAUSE")
    return Paused(True)


@router.method("signal.resume", ProjectParams)
def resume(call: PCall, p: ProjectParams) -> Paused:
    path = _existing(call, p.project).loki / "PAUSE"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    except OSError as exc:
        raise unavailable_file(f"remove {path}", exc) from exc
    return Paused(False)


@router.method("signal.stop", ProjectParams)
def stop(call: PCall, p: ProjectParams) -> Stopping:
    """Create `.loki/STOP`: Loki Mode stops at its next check, and lokid stops the
    project's container run after the grace period."""
    _touch(call, p.project, "STOP")
    return Stopping(True)
