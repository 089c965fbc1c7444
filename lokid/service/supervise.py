"""Serve under a supervisor: READY once serving, watchdog pings, reload and stop notices.

supervised
├── Daemon.serve         started first; READY=1 follows its `started()`
└── lifecycle            STATUS updates and WATCHDOG=1 until shutdown, then STOPPING=1
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from lokid.service.idle import idle_exit
from lokid.service.notify import Notifier

if TYPE_CHECKING:
    from lokid.daemon import Daemon
    from lokid.server.listener import Listener

STATUS_EVERY = 5.0  # seconds between STATUS refreshes when there is no watchdog


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary(daemon: Daemon) -> str:
    """The one-line STATUS systemctl shows."""
    clients = _plural(len(daemon.connections), "client")
    projects = _plural(len(daemon.project_paths()), "project")
    return f"serving {clients}, {projects}"


def attach(
    daemon: Daemon, listener: Listener, notifier: Notifier, idle_after: float | None
) -> None:
    """Register the reload notices and, when asked, the idle-exit service."""
    if notifier.enabled:
        daemon.reload_begin_hooks.append(notifier.reloading)
        daemon.reload_end_hooks.append(lambda: notifier.ready(summary(daemon)))
    if idle_after is not None:
        daemon.services.append(idle_exit(idle_after, listener.sock))


async def supervised(
    daemon: Daemon, listener: Listener, notifier: Notifier, idle_after: float | None = None
) -> None:
    attach(daemon, listener, notifier, idle_after)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.serve, listener)
            nursery.start_soon(_lifecycle, daemon, notifier)
    finally:
        notifier.close()


async def _lifecycle(daemon: Daemon, notifier: Notifier) -> None:
    if not notifier.enabled:
        return
    notifier.ready(summary(daemon))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_tick, daemon, notifier)
        await daemon.wait_stopping()
        nursery.cancel_scope.cancel()
    notifier.stopping()


async def _tick(daemon: Daemon, notifier: Notifier) -> None:
    """WATCHDOG=1 at half the timeout (the event loop is alive if this runs); STATUS on change."""
    last = summary(daemon)
    while True:
        await trio.sleep(notifier.watchdog or STATUS_EVERY)
        if notifier.watchdog:
            notifier.ping()
        now = summary(daemon)
        if now != last:
            notifier.status(now)
            last = now
