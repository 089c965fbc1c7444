"""The daemon's life as the rest of lokid sees it: who it is, whether it is stopping, its
clients, and a way to start background work.

`Daemon` (daemon.py) drives it; areas and handlers get only this, never the daemon, so a
rule such as "idle means no client and every area idle" can be tested without a socket.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Sized
from typing import Any, Protocol

import trio

from lokid import __version__
from lokid.errors import guarded

log = logging.getLogger("lokid.daemon")

Work = Callable[..., Awaitable[None]]


class Area(Protocol):
    """What every area of the daemon (queues, runs, the watcher, ...) offers its lifecycle."""

    async def run(self) -> None:
        """Background work for the daemon's life (cancelled at shutdown); may return at once."""
        ...

    def reload(self) -> None:
        """Re-read configuration (SIGHUP)."""
        ...

    def idle(self) -> bool:
        """Nothing in flight that an idle exit would abandon (a claimed task, a run)."""
        ...

    def close(self) -> None:
        """Release what the area holds (databases, files); the last thing it does."""
        ...


class Spawner:
    """Starts background work in the daemon's nursery, or once it exists. Each piece is
    guarded: one project's failing work (a view writer, a STOP grace) is logged, and never
    ends the daemon or anyone else's work."""

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self._later: list[tuple[Work, tuple[Any, ...]]] = []

    def __call__(self, fn: Work, *args: Any) -> None:
        if self._nursery is None:
            self._later.append((fn, args))
        else:
            self._nursery.start_soon(guarded, _name(fn), fn, *args)

    def attach(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        for fn, args in self._later:
            nursery.start_soon(guarded, _name(fn), fn, *args)
        self._later.clear()


def _name(fn: Work) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


class Lifecycle:
    def __init__(self) -> None:
        self.version = __version__
        self.pid = os.getpid()
        self.started = time.monotonic()
        self.spawn = Spawner()
        # The open connections (the daemon keeps it; counted for status and idle exit).
        self.connections: Sized = ()
        self._stop = trio.Event()

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_shutdown(self, why: str) -> None:
        if not self._stop.is_set():
            log.info("shutting down (%s)", why)
            self._stop.set()

    async def wait_stopping(self) -> None:
        """Return once shutdown was requested (lets work act before the drain)."""
        await self._stop.wait()
