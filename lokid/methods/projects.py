"""project.add|remove|list|status and signal.pause|resume|stop."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import trio

from lokid.docker.runs import runs_of
from lokid.errors import LokidError, NotFound, unavailable_file
from lokid.files import signals
from lokid.projects import Project
from lokid.server.dispatch import Call, Router
from lokid.watch.area import dashboard_status
from lokid.wire.daemon import Empty
from lokid.wire.projects import (
    PathParams,
    Paused,
    ProjectInfo,
    ProjectList,
    ProjectOne,
    ProjectStatus,
    Removed,
    Stopping,
)
from lokid.wire.queue import ProjectParams

router = Router()


def _queue_counts(call: Call, project: Project) -> dict[str, int] | None:
    if not project.loki.is_dir():
        return None
    return call.daemon.queues.open(project).stats().states


async def _run(call: Call, project: Project) -> tuple[Any, str | None]:
    try:
        return await runs_of(call.daemon).status(project), None
    except LokidError as exc:
        return None, exc.message


async def _info(call: Call, project: Project) -> ProjectInfo:
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
async def add(call: Call, p: PathParams) -> ProjectOne:
    return ProjectOne(await _info(call, call.daemon.projects.add(p.path)))


@router.method("project.remove", PathParams)
def remove(call: Call, p: PathParams) -> Removed:
    return Removed(call.daemon.projects.remove(p.path))


@router.method("project.list", Empty)
async def list_projects(call: Call, p: Empty) -> ProjectList:
    return ProjectList([await _info(call, proj) for proj in call.daemon.projects.watched()])


@router.method("project.status", ProjectParams)
async def status(call: Call, p: ProjectParams) -> ProjectStatus:
    project = call.daemon.projects.get(p.project)
    has_loki = project.loki.is_dir()
    run, run_error = await _run(call, project)
    breakers: dict[str, Any] = {}
    if has_loki:
        queue = call.daemon.queues.open(project)
        with queue.transaction():
            breakers = queue.breakers.listing(queue.clock())
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


def _existing(call: Call, path: str) -> Project:
    project = call.daemon.projects.get(path)
    if not project.exists():
        raise NotFound(f"project folder {path} does not exist")
    return project


def _touch(call: Call, project: str, name: str) -> None:
    path = _existing(call, project).loki / name
    try:
        signals.touch(path)
    except OSError as exc:
        raise unavailable_file(f"create {path}", exc) from exc


@router.method("signal.pause", ProjectParams)
def pause(call: Call, p: ProjectParams) -> Paused:
    """Create `.loki/PAUSE`, as `loki pause` does; the watcher announces it."""
    _touch(call, p.project, "PAUSE")
    return Paused(True)


@router.method("signal.resume", ProjectParams)
def resume(call: Call, p: ProjectParams) -> Paused:
    path = _existing(call, p.project).loki / "PAUSE"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    except OSError as exc:
        raise unavailable_file(f"remove {path}", exc) from exc
    return Paused(False)


@router.method("signal.stop", ProjectParams)
def stop(call: Call, p: ProjectParams) -> Stopping:
    """Create `.loki/STOP`: Loki Mode stops at its next check, and lokid stops the
    project's container run after the grace period."""
    _touch(call, p.project, "STOP")
    return Stopping(True)
