"""run.start, run.stop, run.status, run.list, run.logs, image.update.

The work is in `lokid.docker.runs`; these handlers validate the project and shape replies.
`install` (called from `lokid.cli.build_daemon`) gives the daemon its run manager and the
engine watch service.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from lokid.docker.runs import install as _install
from lokid.docker.runs import runs_of
from lokid.errors import InvalidParams
from lokid.server.connection import encode_message
from lokid.server.dispatch import Call, Router
from lokid.wire.daemon import Empty, Event
from lokid.wire.messages import Notification
from lokid.wire.runs import (
    ImageUpdateParams,
    ImageUpdateResult,
    ProjectParams,
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

if TYPE_CHECKING:
    from lokid.daemon import Daemon

router = Router()

# `run.log` events answer one request, not a subscription: their `sub` is 0.
LOG_SUB = 0


def with_runs(daemon: Daemon, env: Mapping[str, str] | None = None) -> Daemon:
    """Give `daemon` its run manager and the engine watch service; returns `daemon`."""
    _install(daemon, env)
    return daemon


@router.method("run.start", RunStartParams)
async def run_start(call: Call, params: RunStartParams) -> RunStartResult:
    project = call.daemon.projects.get(params.project)
    bad = [k for k in params.env if not k or "=" in k or "\x00" in k]
    if bad:
        raise InvalidParams(f"run.start: env names must be non-empty, without '=': {bad!r}")
    return await runs_of(call.daemon).start(project, params)


@router.method("run.stop", RunStopParams)
async def run_stop(call: Call, params: RunStopParams) -> RunStopResult:
    if params.grace is not None and params.grace < 0:
        raise InvalidParams("run.stop: grace must be zero or more seconds")
    runs = runs_of(call.daemon)
    if params.all:
        if params.project is not None:
            raise InvalidParams("run.stop: give either project or all, not both")
        return await runs.stop_all(params.grace)
    if params.project is None:
        raise InvalidParams("run.stop: project is required (or all: true)")
    return await runs.stop(call.daemon.projects.get(params.project), params.grace)


@router.method("run.status", ProjectParams)
async def run_status(call: Call, params: ProjectParams) -> RunStatusResult:
    project = call.daemon.projects.get(params.project)
    return RunStatusResult(await runs_of(call.daemon).status(project))


@router.method("run.list", Empty)
async def run_list(call: Call, params: Empty) -> RunListResult:
    return RunListResult(await runs_of(call.daemon).list_runs())


@router.method("run.logs", RunLogsParams)
async def run_logs(call: Call, params: RunLogsParams) -> RunLogsResult:
    if params.tail is not None and params.tail < 0:
        raise InvalidParams("run.logs: tail must be zero or more lines")
    project = call.daemon.projects.get(params.project)
    deliver = None
    if params.follow:
        seq = 0

        async def deliver(container: str, line: str | None) -> None:
            # Straight to the requesting connection, waiting for room: a log stream is the
            # answer to this request, so lines are never dropped (the reader is slowed).
            nonlocal seq
            seq += 1
            data: dict[str, object] = {"id": call.msgid, "container": container}
            if line is None:  # the stream ended: a client can stop reading events
                data.update(end=True, lines=seq - 1)
            else:
                data["line"] = line
            event = Event(LOG_SUB, seq, "run.log", project.path, iso(time.time()), data)
            await call.conn.outbox.send_reply(encode_message(Notification("event", event)))

    container, lines, streamed = await runs_of(call.daemon).logs(project, params.tail, deliver)
    return RunLogsResult(container, lines, streamed)


@router.method("image.update", ImageUpdateParams)
async def image_update(call: Call, params: ImageUpdateParams) -> ImageUpdateResult:
    return await runs_of(call.daemon).update_image(params.image)
