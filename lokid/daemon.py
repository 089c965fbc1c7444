"""The daemon: its shared state, and the nursery tree that runs it.

    serve
    ├── signals             SIGTERM/SIGINT stop, SIGHUP reload
    ├── services            background work areas register (lease sweeper, views, ...)
    └── connections
        ├── accept loop     until stop
        └── one task per connection

Stopping closes the listener first, lets each connection finish what it has in
flight for `shutdown_grace` seconds, cancels the rest, then runs the stop hooks.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from lokid import __version__
from lokid.hub import Hub
from lokid.projects import Projects
from lokid.server.connection import CLOSE_FLUSH_SECONDS, encode_message
from lokid.server.dispatch import Router
from lokid.server.listener import Listener, accept_loop
from lokid.settings import Settings

if TYPE_CHECKING:
    from lokid.queues import QueueArea
    from lokid.server.connection import Connection
    from lokid.watch.area import WatchArea

log = logging.getLogger("lokid.daemon")

Service = Callable[["Daemon"], Awaitable[None]]


class Daemon:
    def __init__(self, settings: Settings, router: Router) -> None:
        self.settings = settings
        self.router = router
        self.version = __version__
        self.pid = os.getpid()
        self.hub = Hub(encode_message)
        self.projects = Projects(settings.state_dir / "projects.json")
        self.projects.restore()
        self.hub.observers.append(self._remember)
        self.connections: set[Connection] = set()
        self.started = time.monotonic()
        self.services: list[Service] = []
        self.reload_hooks: list[Callable[[], None]] = []
        # Run before and after the reload hooks (sd_notify RELOADING=1 ... READY=1).
        self.reload_begin_hooks: list[Callable[[], None]] = []
        self.reload_end_hooks: list[Callable[[], None]] = []
        # Each returns True when its area is idle (no claimed task, no running container);
        # `serve --idle-exit` stops only when all do and no client is connected.
        self.idle_checks: list[Callable[[], bool]] = []
        self.stop_hooks: list[Callable[[], None]] = []
        self._stop = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.queues: QueueArea  # set by lokid.methods.queue.with_queues
        self.watch: WatchArea  # set by lokid.watch.area.with_watch
        self._spawn_later: list[tuple[Callable[..., Awaitable[None]], tuple[object, ...]]] = []

    def _remember(self, topic: str, project: str | None, time: str, data: object) -> None:
        """Keep each project's last events for `project.status`."""
        if project is not None:
            known = self.projects.known(project)
            if known is not None:
                known.recent.append({"topic": topic, "time": time, "data": data})

    def spawn(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        """Run background work for the daemon's life (e.g. a project's view writer)."""
        if self._nursery is None:
            self._spawn_later.append((fn, args))
        else:
            self._nursery.start_soon(fn, *args)

    def project_paths(self) -> list[str]:
        return self.projects.paths()

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started

    def request_shutdown(self, why: str) -> None:
        if not self._stop.is_set():
            log.info("shutting down (%s)", why)
            self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def wait_stopping(self) -> None:
        """Return once shutdown was requested (lets a service act before the drain)."""
        await self._stop.wait()

    def reload(self) -> None:
        """SIGHUP: each area re-reads its configuration; one failing does not stop the rest."""
        log.info("reloading configuration")
        for hook in [*self.reload_begin_hooks, *self.reload_hooks, *self.reload_end_hooks]:
            try:
                hook()
            except Exception:
                log.exception("reload hook %r failed", hook)
        self.hub.publish("config.reloaded", None, {"source": "daemon"})

    async def serve(
        self,
        listener: Listener,
        *,
        handle_signals: bool = True,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with trio.open_nursery() as root:
                if handle_signals:
                    await root.start(self._signals)
                for service in self.services:
                    root.start_soon(service, self)
                self._nursery = root
                for fn, args in self._spawn_later:
                    root.start_soon(fn, *args)
                self._spawn_later.clear()
                await self._serve_connections(listener, task_status)
                root.cancel_scope.cancel()
        finally:
            for hook in reversed(self.stop_hooks):
                try:
                    hook()
                except Exception:
                    log.exception("stop hook %r failed", hook)
            listener.close()
            log.info("stopped")

    async def _serve_connections(self, listener: Listener, task_status: trio.TaskStatus) -> None:
        async with trio.open_nursery() as conns:
            accept_scope = trio.CancelScope()

            async def accept() -> None:
                with accept_scope:
                    await accept_loop(self, listener, conns)

            conns.start_soon(accept)
            where = listener.path or listener.sock.getsockname() or "an inherited socket"
            log.info("lokid %s serving on %s (pid %d)", self.version, where, self.pid)
            task_status.started()
            await self._stop.wait()
            accept_scope.cancel()
            listener.sock.close()  # new clients are refused now; the file goes at the end
            self.hub.publish("daemon.stopping", None, {"pid": self.pid})
            for conn in list(self.connections):
                conn.stop_reading()
            if not await self._connections_closed(self.settings.shutdown_grace):
                log.warning(
                    "cancelling the requests of %d busy connection(s)", len(self.connections)
                )
                for conn in list(self.connections):
                    conn.cancel_inflight()  # each still answers `cancelled`
                await self._connections_closed(CLOSE_FLUSH_SECONDS + 0.5)
            conns.cancel_scope.cancel()

    async def _connections_closed(self, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while self.connections:
                await trio.sleep(0.01)
        return not self.connections

    async def _signals(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.reload()
                else:
                    self.request_shutdown(signal.Signals(signum).name)
