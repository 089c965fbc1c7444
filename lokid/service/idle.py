"""Idle exit: with an inherited socket, stop when nothing needs us for a while.

The manager keeps listening while we are gone and starts lokid again on the next
connect, so an idle daemon costs nothing. Idle means: no client connected and
every area's `Daemon.idle_checks` (claimed tasks, running containers) says idle.
"""

from __future__ import annotations

import logging
import select
import socket
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from lokid.daemon import Daemon, Service

log = logging.getLogger("lokid.idle")


class IdleTimer:
    """Pure rule: how long the daemon has been idle, by the clock it is given."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.since: float | None = None

    def update(self, idle: bool, now: float) -> float | None:
        """Seconds left before exit (<= 0: exit now); None while busy."""
        if not idle:
            self.since = None
            return None
        if self.since is None:
            self.since = now
        return self.since + self.limit - now


def has_pending(sock: socket.socket) -> bool:
    """A connection waits in the listen queue, not yet accepted."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(readable)


def is_idle(daemon: Daemon, listener: socket.socket | None = None) -> bool:
    """No connection (accepted or queued) and every area idle; a failing check is busy."""
    if daemon.connections or (listener is not None and has_pending(listener)):
        return False
    for check in daemon.idle_checks:
        try:
            if not check():
                return False
        except Exception:
            log.exception("idle check %r failed; assuming busy", check)
            return False
    return True


def poll_interval(limit: float) -> float:
    """Areas have no idle event to wait on, so look often enough to be on time."""
    return min(max(limit / 5, 0.02), 1.0)


def idle_exit(limit: float, listener: socket.socket | None = None) -> Service:
    """A daemon service that requests shutdown after `limit` idle seconds.

    A connection still in the listen queue counts as a client. One that arrives after
    the decision is not accepted (see `accept_loop`): it waits in the manager's socket
    for the lokid the manager starts next."""

    async def service(daemon: Daemon) -> None:
        timer = IdleTimer(limit)
        step = poll_interval(limit)
        while not daemon.stopping:
            left = timer.update(is_idle(daemon, listener), trio.current_time())
            if left is not None and left <= 0:
                daemon.request_shutdown(f"idle for {limit:g}s")
                return
            await trio.sleep(step if left is None else min(step, left))

    return service
