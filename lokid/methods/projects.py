"""project.add|remove|list|status and signal.pause|resume|stop."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import trio

from lokid.docker.area import RunArea
from lokid.errors import LokidError, NotFound, unavailable_file
from lokid.files import signals
from lokid.files.dashboard import dashboard_status
from lokid.files.reading import is_dir
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
    Resumed,
    Stopping,
)
from lokid.wire.queue import STATES


class ProjectApp(Protocol):
    projects: Projects
    queues: QueueArea
    runs: RunArea | None
    watcher: Watcher


router = Router()
PCall = Call[ProjectApp]

# How long `project.add` waits for its watches to be in place before answering anyway.
SETTLE_TIMEOUT = 5.0


class _QueueView(NamedTuple):
    counts: dict[str, int] | None  # per state; nil for a folder without `.loki/`
    breakers: dict[str, Any]
    problem: str | None  # why the queue cannot be read now


def _queue_view(call: PCall, project: Project, with_breakers: bool = False) -> _QueueView:
    """What a status shows of the queue, read only (nothing is created). A queue that
    cannot be opened (no permission, a broken file) is a problem shown in the status, not
    an error answering it."""
    if not is_dir(project.loki):
        return _QueueView(None, {}, project.problem)
    try:
        queue = call.app.queues.existing(project)
        if queue is None:
            return _QueueView(dict.fromkeys(STATES, 0), {}, project.problem)
        breakers: dict[str, Any] = {}
        if with_breakers:
            with queue.transaction():
                breakers = dict(queue.breakers.listing(queue.clock()))
        return _QueueView(queue.stats().states, breakers, project.problem)
    except LokidError as exc:
        return _QueueView(None, {}, exc.message)


async def _run(call: PCall, project: Project) -> tuple[Any, str | None]:
    if call.app.runs is None:
        return None, "container runs are not enabled in this lokid"
    try:
        return await call.app.runs.runs.status(project), None
    except LokidError as exc:
        return None, exc.message


async def _info(call: PCall, project: Project) -> ProjectInfo:
    run, _ = await _run(call, project)
    queue = _queue_view(call, project)
    return ProjectInfo(
        path=project.path,
        name=project.name,
        has_loki=is_dir(project.loki),
        watched=project.watched,
        missing=not project.exists(),
        run=run,
        queue=queue.counts,
        problem=queue.problem,
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
    project = call.app.projects.peek(p.project)
    has_loki = is_dir(project.loki)
    run, run_error = await _run(call, project)
    queue = _queue_view(call, project, with_breakers=True)
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
        queue=queue.counts,
        breakers=queue.breakers,
        dashboard=dashboard,
        events=list(project.recent),
        problem=queue.problem,
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


PERPETUAL_NOTE = (
    "a Loki Mode run in perpetual mode (its default) removes .loki/PAUSE at its next check "
    "and carries on; lokid's agents stay paused until `lokictl resume` (.loki/lokid/PAUSE)"
)


@router.method("signal.pause", ProjectParams)
def pause(call: PCall, p: ProjectParams) -> Paused:
    """Create `.loki/PAUSE`, as `loki pause` does (the watcher announces it), and lokid's
    own pause, which Loki Mode's perpetual mode does not remove."""
    _touch(call, p.project, "PAUSE")
    _touch(call, p.project, "lokid/PAUSE")
    return Paused(True, PERPETUAL_NOTE)


@router.method("signal.resume", ProjectParams)
def resume(call: PCall, p: ProjectParams) -> Resumed:
    """Clear what `pause` and `stop` set, as `loki resume` does: PAUSE, STOP, and lokid's
    own pause and PAUSE_AT_CHECKPOINT (both hold lokid's claims)."""
    loki = _existing(call, p.project).loki
    try:
        cleared = signals.remove(loki, signals.RESUME_CLEARS)
    except OSError as exc:
        raise unavailable_file(f"clear the signals in {loki}", exc) from exc
    return Resumed(paused=False, stopped=False, cleared=cleared)


@router.method("signal.stop", ProjectParams)
def stop(call: PCall, p: ProjectParams) -> Stopping:
    """Create `.loki/STOP`: Loki Mode stops at its next check, and lokid stops the
    project's container run after the grace period."""
    _touch(call, p.project, "STOP")
    return Stopping(True)
