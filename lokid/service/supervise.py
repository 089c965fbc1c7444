"""Serve under a supervisor: READY once serving, watchdog pings, reload and stop notices.

supervised
├── serve                started first; READY=1 follows its `started()`
└── lifecycle            STATUS updates and WATCHDOG=1 until shutdown, then STOPPING=1

The reload notices (RELOADING=1 ... READY=1) are hooks the composition root gives the
daemon; this module only knows the lifecycle, the notifier and a one-line summary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from lokid.lifecycle import Lifecycle
from lokid.service.notify import Notifier

STATUS_EVERY = 5.0  # seconds between STATUS refreshes when there is no watchdog

Serve = Callable[..., Awaitable[None]]


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


async def supervised(
    serve: Serve, lifecycle: Lifecycle, notifier: Notifier, summary: Callable[[], str]
) -> None:
    """Run `serve` (a `Daemon.serve` bound to its listener) and keep the manager told."""
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            nursery.start_soon(_notices, lifecycle, notifier, summary)
    finally:
        notifier.close()


async def _notices(lifecycle: Lifecycle, notifier: Notifier, summary: Callable[[], str]) -> None:
    if not notifier.enabled:
        return
    notifier.ready(summary())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_tick, notifier, summary)
        await lifecycle.wait_stopping()
        nursery.cancel_scope.cancel()
    notifier.stopping()


async def _tick(notifier: Notifier, summary: Callable[[], str]) -> None:
    """WATCHDOG=1 at half the timeout (the event loop is alive if this runs); STATUS on change."""
    last = summary()
    while True:
        await trio.sleep(notifier.watchdog or STATUS_EVERY)
        if notifier.watchdog:
            notifier.ping()
        now = summary()
        if now != last:
            notifier.status(now)
            last = now
