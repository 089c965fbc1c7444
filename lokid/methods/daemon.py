"""hello, ping, daemon.status, daemon.info, daemon.shutdown, subscribe, unsubscribe,
debug.sleep."""

from __future__ import annotations

import os
import stat
import time
from typing import Protocol

import trio

from lokid.errors import InvalidParams, NotFound
from lokid.files.reading import is_dir
from lokid.hub import Hub
from lokid.lifecycle import Lifecycle
from lokid.projects import Project, Projects, check_project_path
from lokid.server.dispatch import Call, Router
from lokid.settings import Settings
from lokid.wire.daemon import (
    Empty,
    HelloParams,
    HelloResult,
    InfoDocker,
    InfoProject,
    InfoResult,
    PingResult,
    ShutdownResult,
    SleepParams,
    SleepResult,
    StatusResult,
    SubscribeParams,
    SubscribeResult,
    UnsubscribeParams,
    UnsubscribeResult,
)
from lokid.wire.messages import PROTOCOL_VERSION
from lokid.wire.times import iso


class DaemonApp(Protocol):
    settings: Settings
    lifecycle: Lifecycle
    hub: Hub
    projects: Projects
    capabilities: list[str]
    environment: dict[str, str]

    def docker_endpoint(self) -> InfoDocker | None: ...


router = Router()
MAX_SLEEP = 300.0


@router.method("hello", HelloParams)
def hello(call: Call[DaemonApp], params: HelloParams) -> HelloResult:
    if params.protocol != PROTOCOL_VERSION:
        raise InvalidParams(
            f"this lokid speaks protocol {PROTOCOL_VERSION}; "
            f"the client asked for {params.protocol}",
            {"protocol": PROTOCOL_VERSION},
        )
    call.peer.client = params.client
    life = call.app.lifecycle
    return HelloResult(
        server="lokid",
        version=life.version,
        protocol=PROTOCOL_VERSION,
        capabilities=call.app.capabilities,
        pid=life.pid,
    )


@router.method("ping", Empty)
def ping(call: Call[DaemonApp], params: Empty) -> PingResult:
    return PingResult(time=iso(time.time()))


@router.method("daemon.status", Empty)
def status(call: Call[DaemonApp], params: Empty) -> StatusResult:
    life = call.app.lifecycle
    return StatusResult(
        version=life.version,
        pid=life.pid,
        uptime_s=round(life.uptime, 3),
        connections=len(life.connections),
        projects=call.app.projects.paths(),
    )


@router.method("daemon.info", Empty)
def info(call: Call[DaemonApp], params: Empty) -> InfoResult:
    """What `lokictl info` shows: enough to find lokid's files and to see why runs go where
    they go (lokid keeps the environment of whoever started it)."""
    app, life = call.app, call.app.lifecycle
    return InfoResult(
        version=life.version,
        pid=life.pid,
        uptime_s=round(life.uptime, 3),
        socket=str(app.settings.socket),
        log_file=_stderr_file(),
        state_dir=str(app.settings.state_dir),
        docker=app.docker_endpoint(),
        environment=app.environment,
        projects=[_project_info(p) for p in app.projects.watched()],
    )


def _stderr_file() -> str | None:
    """Where lokid logs: its stderr, when that is a file (a terminal or the journal is not)."""
    try:
        if stat.S_ISREG(os.fstat(2).st_mode):
            return os.readlink("/proc/self/fd/2")
    except OSError:
        pass
    return None


def _project_info(project: Project) -> InfoProject:
    missing = not project.exists()
    has_loki = not missing and is_dir(project.loki)
    problem = project.problem
    if missing:
        problem = "the folder is gone"
    elif not has_loki:
        problem = "no .loki/ (run `lokictl init` there)"
    return InfoProject(project.path, project.watched, missing, has_loki, problem)


@router.method("daemon.shutdown", Empty)
def shutdown(call: Call[DaemonApp], params: Empty) -> ShutdownResult:
    call.app.lifecycle.request_shutdown(f"asked by connection {call.peer.id} ({call.peer.client})")
    return ShutdownResult(stopping=True)


@router.method("subscribe", SubscribeParams)
def subscribe(call: Call[DaemonApp], params: SubscribeParams) -> SubscribeResult:
    if not params.topics or not all(params.topics):
        raise InvalidParams("subscribe: topics must be a non-empty list of non-empty globs")
    if params.project is not None:
        # Following a project's events live is following the project: lokid watches it
        # (its folder must exist for that; a path that could never match is refused).
        call.app.projects.use(check_project_path(params.project))
    sub = call.app.hub.subscribe(call.peer, params.topics, params.project)
    return SubscribeResult(sub=sub.id)


@router.method("unsubscribe", UnsubscribeParams)
def unsubscribe(call: Call[DaemonApp], params: UnsubscribeParams) -> UnsubscribeResult:
    if not call.app.hub.unsubscribe(call.peer, params.sub):
        raise NotFound(f"no subscription {params.sub} on this connection")
    return UnsubscribeResult(removed=True)


@router.method("debug.sleep", SleepParams)
async def debug_sleep(call: Call[DaemonApp], params: SleepParams) -> SleepResult:
    """Answer after a while: lets clients test concurrency, cancellation and timeouts."""
    if not 0 <= params.seconds <= MAX_SLEEP:
        raise InvalidParams(f"debug.sleep: seconds must be between 0 and {MAX_SLEEP:g}")
    start = time.monotonic()
    await trio.sleep(params.seconds)
    return SleepResult(slept=round(time.monotonic() - start, 3))
