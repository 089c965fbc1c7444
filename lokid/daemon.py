"""The daemon's lifecycle: the nursery tree that runs the areas and serves the connections.

    serve
    ├── signals             SIGTERM/SIGINT stop, SIGHUP reload
    ├── areas               each area's background work (sweeper, watcher, engine follower)
    ├── spawned work        started by areas while running (view writers, STOP graces)
    └── connections
        ├── accept loop     until stop
        └── one task per connection

Stopping closes the listener first, lets each connection finish what it has in
flight for `shutdown_grace` seconds, cancels the rest, then closes the areas.
The daemon owns no state of its own beyond its connections: the composition
root (`app.py`) builds the areas and hands them in.
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Callable, Sequence

import trio

from lokid.errors import guarded
from lokid.hub import Hub
from lokid.lifecycle import Area, Lifecycle, Work
from lokid.server.batch import Batcher
from lokid.server.connection import CLOSE_FLUSH_SECONDS, Connection, Limits
from lokid.server.dispatch import Dispatch
from lokid.server.listener import Listener, accept_loop
from lokid.server.outbox import OutboxPool
from lokid.wire.events import ConfigReloaded, DaemonStopping

log = logging.getLogger("lokid.daemon")

Hook = Callable[[], None]
AREA_RESTART_DELAY = 1.0  # seconds before an area whose work failed is started again


class Daemon:
    def __init__(
        self,
        lifecycle: Lifecycle,
        hub: Hub,
        dispatch: Dispatch,
        areas: Sequence[Area],
        *,
        limits: Limits,
        shutdown_grace: float,
        before_reload: Sequence[Hook] = (),
        after_reload: Sequence[Hook] = (),
        background: Sequence[Work] = (),
    ) -> None:
        self.lifecycle = lifecycle
        self._hub = hub
        self._dispatch = dispatch
        self._areas = list(areas)
        self._limits = limits
        self._grace = shutdown_grace
        # Run before and after the areas reload (sd_notify RELOADING=1 ... READY=1).
        self._before_reload = list(before_reload)
        self._after_reload = list(after_reload)
        self._background = list(background)
        self.connections: set[Connection] = set()
        lifecycle.connections = self.connections
        # Group commit across connections (when the dispatch offers it), and the cap on
        # the bytes queued for all clients together.
        self.batcher = Batcher(dispatch.group) if dispatch.group is not None else None
        self.outboxes = OutboxPool(limits.outbox_total or None)

    def add_background(self, work: Work) -> None:
        """More work for the daemon's life (say, idle exit); before `serve` only."""
        self._background.append(work)

    def add_reload_hooks(self, before: Hook, after: Hook) -> None:
        self._before_reload.append(before)
        self._after_reload.append(after)

    def areas_idle(self) -> bool:
        """Every area idle (no claimed task, no running container); a failing check is busy."""
        for area in self._areas:
            try:
                if not area.idle():
                    return False
            except Exception:
                log.exception("idle check of %r failed; assuming busy", area)
                return False
        return True

    def reload(self) -> None:
        """SIGHUP: each area re-reads its configuration; one failing does not stop the rest."""
        log.info("reloading configuration")
        hooks = [*self._before_reload, *(a.reload for a in self._areas), *self._after_reload]
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("reload of %r failed", hook)
        self._hub.emit(None, ConfigReloaded(source="daemon"))

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
                for area in self._areas:
                    root.start_soon(self._run_area, area)
                for work in self._background:
                    root.start_soon(work)
                if self.batcher is not None:
                    root.start_soon(self.batcher.run)
                self.lifecycle.spawn.attach(root)
                await self._serve_connections(listener, task_status)
                root.cancel_scope.cancel()
        finally:
            for area in reversed(self._areas):
                try:
                    area.close()
                except Exception:
                    log.exception("closing %r failed", area)
            listener.close()
            if self.batcher is not None and self.batcher.batches:
                b = self.batcher
                log.info(
                    "group commit: %d operations in %d batches (%.1f a batch)",
                    b.operations,
                    b.batches,
                    b.operations / b.batches,
                )
            log.info("stopped")

    async def _run_area(self, area: Area) -> None:
        """An area's background work for the daemon's life: a failure is logged and the work
        started again (as a supervisor would), never the end of the daemon."""
        name = type(area).__name__
        while True:
            failed = False

            async def run() -> None:
                nonlocal failed
                failed = True
                await area.run()
                failed = False

            await guarded(f"the {name} area", run)
            if not failed:
                return
            await trio.sleep(AREA_RESTART_DELAY)

    def _accepted(self, nursery: trio.Nursery) -> Callable[[socket.socket, int | None], None]:
        def accepted(sock: socket.socket, pid: int | None) -> None:
            conn = Connection(
                sock, self._limits, self._dispatch, self._closed, pid, self.batcher, self.outboxes
            )
            self.connections.add(conn)
            nursery.start_soon(conn.run)

        return accepted

    def _closed(self, conn: Connection) -> None:
        self._hub.drop(conn)
        self.connections.discard(conn)

    async def _serve_connections(self, listener: Listener, task_status: trio.TaskStatus) -> None:
        life = self.lifecycle
        async with trio.open_nursery() as conns:
            accept_scope = trio.CancelScope()

            async def accept() -> None:
                with accept_scope:
                    await accept_loop(listener, lambda: life.stopping, self._accepted(conns))

            conns.start_soon(accept)
            where = listener.path or listener.sock.getsockname() or "an inherited socket"
            log.info("lokid %s serving on %s (pid %d)", life.version, where, life.pid)
            task_status.started()
            await life.wait_stopping()
            accept_scope.cancel()
            listener.sock.close()  # new clients are refused now; the file goes at the end
            self._hub.emit(None, DaemonStopping(pid=life.pid))
            for conn in list(self.connections):
                conn.stop_reading()
            if not await self._connections_closed(self._grace):
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
                    self.lifecycle.request_shutdown(signal.Signals(signum).name)
