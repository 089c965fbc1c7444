"""run.start, run.stop, run.status, run.list, run.logs, image.update.

The work is in `lokid.docker`; these handlers validate the request and shape replies.
"""

from __future__ import annotations

import time
from typing import Protocol

from lokid.docker.area import RunArea
from lokid.errors import InvalidParams, Unavailable
from lokid.projects import Projects
from lokid.server.dispatch import Call, Router
from lokid.wire.daemon import Empty, Event
from lokid.wire.events import RunLog
from lokid.wire.projects import ProjectParams
from lokid.wire.runs import (
    ImageUpdateParams,
    ImageUpdateResult,
    RunListResult,
    RunLogsParams,
    RunLogsResult,
    RunStartParams,
    RunStartResult,
    RunStatusResult,
    RunStopParams,
    RunStopResult,
)
from lokid.wire.times import iso


class RunApp(Protocol):
    projects: Projects
    runs: RunArea | None


router = Router()
RCall = Call[RunApp]

# `run.log` events answer one request, not a subscription: their `sub` is 0.
LOG_SUB = 0


def runs_of(call: RCall) -> RunArea:
    if call.app.runs is None:
        raise Unavailable("container runs are not enabled in this lokid")
    return call.app.runs


@router.method("run.start", RunStartParams)
async def run_start(call: RCall, params: RunStartParams) -> RunStartResult:
    area = runs_of(call)
    project = call.app.projects.use(params.project)
    bad = [k for k in params.env if not k or "=" in k or "\x00" in k]
    if bad:
        raise InvalidParams(f"run.start: env names must be non-empty, without '=': {bad!r}")
    return await area.runs.start(project, params)


@router.method("run.stop", RunStopParams)
async def run_stop(call: RCall, params: RunStopParams) -> RunStopResult:
    if params.grace is not None and params.grace < 0:
        raise InvalidParams("run.stop: grace must be zero or more seconds")
    runs = runs_of(call).runs
    if params.all:
        if params.project is not None:
            raise InvalidParams("run.stop: give either project or all, not both")
        return await runs.stop_all(params.grace)
    if params.project is None:
        raise InvalidParams("run.stop: project is required (or all: true)")
    return await runs.stop(call.app.projects.use(params.project), params.grace)


@router.method("run.status", ProjectParams)
async def run_status(call: RCall, params: ProjectParams) -> RunStatusResult:
    runs = runs_of(call).runs
    return RunStatusResult(await runs.status(call.app.projects.peek(params.project)))


@router.method("run.list", Empty)
async def run_list(call: RCall, params: Empty) -> RunListResult:
    return RunListResult(await runs_of(call).runs.list_runs())


@router.method("run.logs", RunLogsParams)
async def run_logs(call: RCall, params: RunLogsParams) -> RunLogsResult:
    if params.tail is not None and params.tail < 0:
        raise InvalidParams("run.logs: tail must be zero or more lines")
    runs = runs_of(call).runs
    project = call.app.projects.peek(params.project)
    deliver = None
    if params.follow:
        seq = 0

        async def deliver(container: str, line: str | None) -> None:
            # Straight to the requesting connection, waiting for room: a log stream is the
            # answer to this request, so lines are never dropped (the reader is slowed).
            nonlocal seq
            seq += 1
            if line is None:  # the stream ended: a client can stop reading events
                data = RunLog(id=call.msgid, container=container, end=True, lines=seq - 1)
            else:
                data = RunLog(id=call.msgid, container=container, line=line)
            event = Event(LOG_SUB, seq, RunLog.TOPIC, project.path, iso(time.time()), data)
            await call.peer.push(event)

    container, lines, streamed = await runs.logs(project, params.tail, deliver)
    return RunLogsResult(container, lines, streamed)


@router.method("image.update", ImageUpdateParams)
async def image_update(call: RCall, params: ImageUpdateParams) -> ImageUpdateResult:
    return await runs_of(call).images.update_image(params.image)
