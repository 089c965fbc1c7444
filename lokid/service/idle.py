"""Idle exit: with an inherited socket, stop when nothing needs us for a while.

The manager keeps listening while we are gone and starts lokid again on the next
connect, so an idle daemon costs nothing. Idle means: no client connected and
every area's `Daemon.idle_checks` (claimed tasks, running containers) says idle.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from lokid.daemon import Daemon

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


def is_idle(daemon: Daemon) -> bool:
    """No connection and every area idle; a failing check counts as busy."""
    if daemon.connections:
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


def idle_exit(limit: float):
    """A daemon service that requests shutdown after `limit` idle seconds."""

    async def service(daemon: Daemon) -> None:
        timer = IdleTimer(limit)
        step = poll_interval(limit)
        while not daemon.stopping:
            left = timer.update(is_idle(daemon), trio.current_time())
            if left is not None and left <= 0:
                daemon.request_shutdown(f"idle for {limit:g}s")
                return
            await trio.sleep(step if left is None else min(step, left))

    return service
