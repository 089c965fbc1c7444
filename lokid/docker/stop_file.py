"""`.loki/STOP` reaches the container lifecycle: after a grace period in which Loki Mode inside
may end by itself, lokid stops the project's run through the same path as `run.stop`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from lokid.docker.runs import Runs
from lokid.errors import LokidError
from lokid.projects import Project
from lokid.wire import events as ev

log = logging.getLogger("lokid.runs")

Emit = Callable[[str | None, Any], None]


class StopFile:
    def __init__(self, runs: Runs, grace: float, emit: Emit) -> None:
        self._runs = runs
        self._grace = grace
        self._emit = emit
        self._stopping: set[str] = set()

    async def honour(self, project: Project) -> None:
        """STOP appeared in `project`: stop its run once the grace has passed."""
        if project.path in self._stopping:
            return
        self._stopping.add(project.path)
        try:
            await trio.sleep(self._grace)
            result = await self._runs.stop(project, None)
            self._emit(project.path, ev.SignalStopDone(stopped=list(result.stopped)))
        except LokidError as exc:
            log.warning("STOP in %s: could not stop the run: %s", project.path, exc.message)
        finally:
            self._stopping.discard(project.path)
