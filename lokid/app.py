"""The composition root: every part of the daemon built once, and wired here only.

    settings ─┬─ lifecycle (who we are, stopping, spawn)
              ├─ hub (events)            ← every area publishes through `hub.emit`
              ├─ projects (watched set)
              ├─ queues   (QueueArea)    ← projects, hub, spawn
              ├─ runs     (RunArea)      ← projects, hub         (None: containers off)
              ├─ watcher  (Watcher)      ← projects, reactions   (Reactions: queues, runs, hub)
              ├─ migrations (MigrationArea) ← hub                (~/.loki/migrations)
              └─ router   (methods/*)    → Dispatch(router, app) → Daemon(areas, dispatch)

No other module builds an area or reaches into another's insides; handlers get the `App`
through `Call.app`, each typed by the small protocol it needs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lokid.daemon import Daemon
from lokid.docker.area import RunArea
from lokid.docker.config import RunConfig
from lokid.hub import Hub
from lokid.lifecycle import Lifecycle
from lokid.methods import build_router
from lokid.migrations import MigrationArea
from lokid.projects import Projects
from lokid.queue.area import QueueArea
from lokid.queue.unit import GroupCommit
from lokid.reactions import Reactions
from lokid.server.connection import Limits, encode_message
from lokid.server.dispatch import Dispatch, Router
from lokid.server.listener import Listener
from lokid.service.idle import idle_exit
from lokid.service.notify import Notifier
from lokid.service.supervise import plural
from lokid.settings import Settings
from lokid.watch.watcher import Watcher
from lokid.wire.daemon import InfoDocker

# Variables that change where and how runs go, shown by daemon.info (lokid keeps the
# environment of whoever started it, which may not be the user's shell).
RUN_ENVIRONMENT = ("DOCKER_HOST", "DOCKER_CONTEXT", "LOKI_DOCKER_IMAGE")


@dataclass
class App:
    """The parts a request may reach (handlers see it as `call.app`)."""

    settings: Settings
    lifecycle: Lifecycle
    hub: Hub
    projects: Projects
    queues: QueueArea
    runs: RunArea | None
    watcher: Watcher
    migrations: MigrationArea
    capabilities: list[str] = field(default_factory=list)
    # What lokid was started with that decides where runs go (daemon.info shows it).
    environment: dict[str, str] = field(default_factory=dict)

    def docker_endpoint(self) -> InfoDocker | None:
        if self.runs is None:
            return None
        endpoint = self.runs.config.endpoint
        return InfoDocker(endpoint.host, endpoint.source)

    @property
    def areas(self) -> list[Any]:
        """In the order they start; they close in reverse."""
        parts = (self.queues, self.runs, self.watcher, self.migrations)
        return [a for a in parts if a is not None]

    def summary(self) -> str:
        """The one-line STATUS a service manager shows."""
        clients = plural(len(self.lifecycle.connections), "client")
        return f"serving {clients}, {plural(len(self.projects.paths()), 'project')}"


def build_app(
    settings: Settings, env: Mapping[str, str] | None = None, *, containers: bool = True
) -> App:
    env = os.environ if env is None else env
    lifecycle = Lifecycle()
    hub = Hub(encode_message)
    projects = Projects(settings.state_dir / "projects.json")
    projects.restore()
    hub.observers.append(_remember_in(projects))
    queues = QueueArea(settings, hub.emit, lifecycle.spawn)
    queues.watched = projects.watched  # a queue shared through PostgreSQL is followed
    projects.on_change.append(queues.follow_shared)  # as soon as its project is watched
    runs = None
    if containers:
        config = RunConfig.from_env(settings.container_stop_grace, env)
        runs = RunArea(config, settings.stop_file_grace, projects, hub.emit)
    reactions = Reactions(hub, queues, runs, lifecycle.spawn)
    watcher = Watcher(
        projects,
        reactions,
        lifecycle.wait_stopping,
        step_ms=settings.watch_step_ms,
        debounce_ms=settings.watch_debounce_ms,
    )
    migrations = MigrationArea(publish=hub.publish)  # ~/.loki/migrations of lokid's HOME
    app = App(settings, lifecycle, hub, projects, queues, runs, watcher, migrations)
    app.environment = {k: env[k] for k in RUN_ENVIRONMENT if env.get(k)}
    return app


def _remember_in(projects: Projects):
    """Keep each project's last events for `project.status`."""

    def remember(topic: str, project: str | None, time: str, data: Any) -> None:
        if project is not None:
            known = projects.find(project)
            if known is not None:
                known.recent.append({"topic": topic, "time": time, "data": data})

    return remember


def build_daemon(
    app: App,
    router: Router | None = None,
    *,
    listener: Listener | None = None,
    notifier: Notifier | None = None,
    idle_after: float | None = None,
) -> Daemon:
    """The daemon serving `app`: its methods, and what running under a manager adds
    (reload notices; idle exit, which needs the manager's socket)."""
    router = router or build_router()
    app.capabilities = sorted(router.methods)
    settings = app.settings
    limits = Limits(
        max_frame=settings.max_frame,
        outbox_limit=settings.outbox_limit,
        max_inflight=settings.max_inflight,
        spin_us=settings.spin_us,
        outbox_total=settings.outbox_total,
    )
    daemon = Daemon(
        app.lifecycle,
        app.hub,
        Dispatch(router, app, GroupCommit),
        app.areas,
        limits=limits,
        shutdown_grace=settings.shutdown_grace,
    )
    if daemon.batcher is not None:
        app.queues.on_free.append(daemon.batcher.requeue)
    if notifier is not None and notifier.enabled:
        daemon.add_reload_hooks(notifier.reloading, lambda: notifier.ready(app.summary()))
    if idle_after is not None:
        sock = listener.sock if listener is not None else None
        daemon.add_background(idle_exit(idle_after, app.lifecycle, daemon.areas_idle, sock))
    return daemon
