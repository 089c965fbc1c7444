"""The run area: Loki Mode's containers on one Docker engine, assembled from its parts
(the engine connection, images, runs, the reconciler that follows the engine, and STOP)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from lokid.docker.config import RunConfig
from lokid.docker.engine import Engine
from lokid.docker.images import Images
from lokid.docker.reconcile import Reconciler
from lokid.docker.runs import Runs
from lokid.docker.stop_file import StopFile
from lokid.projects import Projects

Emit = Callable[[str | None, Any], None]


class RunArea:
    def __init__(
        self, config: RunConfig, stop_file_grace: float, projects: Projects, emit: Emit
    ) -> None:
        self.config = config
        self.engine = Engine(config.endpoint, list(config.secrets.values()))
        self.images = Images(self.engine, config.image, emit)
        self.runs = Runs(config, self.engine, self.images, projects, emit)
        self.reconciler = Reconciler(self.engine, self.runs, projects, emit)
        self.stop_file = StopFile(self.runs, stop_file_grace, emit)

    # -- the Area protocol -----------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.runs.keep_sessions_fresh)
            await self.reconciler.follow_engine()

    def reload(self) -> None:
        pass

    def idle(self) -> bool:
        return self.runs.idle()

    def close(self) -> None:
        pass
