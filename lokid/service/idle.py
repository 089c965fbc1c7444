"""Idle exit: with an inherited socket, stop when nothing needs us for a while.

The manager keeps listening while we are gone and starts lokid again on the next
connect, so an idle daemon costs nothing. Idle means: no client connected (or waiting
to be accepted) and every area idle (no claimed task, no running container).
"""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import Callable, Sized

import trio

from lokid.lifecycle import Lifecycle, Work

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


def is_idle(
    connections: Sized, areas_idle: Callable[[], bool], listener: socket.socket | None = None
) -> bool:
    """No connection (accepted or queued) and every area idle."""
    if len(connections) or (listener is not None and has_pending(listener)):
        return False
    return areas_idle()


def poll_interval(limit: float) -> float:
    """Areas have no idle event to wait on, so look often enough to be on time."""
    return min(max(limit / 5, 0.02), 1.0)


def idle_exit(
    limit: float,
    lifecycle: Lifecycle,
    areas_idle: Callable[[], bool],
    listener: socket.socket | None = None,
) -> Work:
    """Background work that requests shutdown after `limit` idle seconds.

    A connection still in the listen queue counts as a client. One that arrives after
    the decision is not accepted (see `accept_loop`): it waits in the manager's socket
    for the lokid the manager starts next."""

    async def watch_idleness() -> None:
        timer = IdleTimer(limit)
        step = poll_interval(limit)
        while not lifecycle.stopping:
            idle = is_idle(lifecycle.connections, areas_idle, listener)
            left = timer.update(idle, trio.current_time())
            if left is not None and left <= 0:
                lifecycle.request_shutdown(f"idle for {limit:g}s")
                return
            await trio.sleep(step if left is None else min(step, left))

    return watch_idleness
