"""lokid's socket as the bridge uses it: lokictl's blocking client, never on the event loop.

Each call runs in a worker thread (`anyio.to_thread`) on a connection of its own taken
from a small pool, so concurrent tool calls neither wait for each other nor block the
SDK's loop. Connections are made as lokictl makes them (`Client.connect`, spawning lokid
on demand unless told not to). Nothing here releases a lease: a bridge that goes away
leaves its tasks to expire as any client's would.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio.to_thread

from lokictl import Client, DaemonError, NotRunning, ProtocolError

# A reply lokid has not sent after this long counts as a lost connection. Generous: a
# run.start pulls its image first, which can take minutes on a slow registry.
CALL_TIMEOUT = 600.0
# Idle connections kept for the next calls; more only open while calls overlap.
POOL_SIZE = 4


class LokidUnavailable(Exception):
    """lokid cannot be reached, or the connection broke; the message says what to do."""


class Link:
    def __init__(self, socket: Path, spawn: bool) -> None:
        self.socket = socket
        self.spawn = spawn
        self._idle: list[Client] = []
        self._lock = threading.Lock()

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """One request, answered in a worker thread; raises `DaemonError` for lokid's
        error replies and `LokidUnavailable` when lokid cannot be reached."""
        return await anyio.to_thread.run_sync(self.call_blocking, method, params)

    def call_blocking(self, method: str, params: dict[str, Any]) -> Any:
        client, msgid = self._send(method, params)
        try:
            result = client.result(msgid)
        except DaemonError:
            self._put_back(client)
            raise
        except (ProtocolError, OSError) as exc:  # socket.timeout is an OSError
            client.close()
            raise LokidUnavailable(
                f"lost the connection to lokid on {self.socket} during {method} ({exc}); "
                "it may or may not have been carried out: check before repeating it"
            ) from exc
        self._put_back(client)
        return result

    def connect(self, spawn: bool | None = None, timeout: float | None = CALL_TIMEOUT) -> Client:
        """A new connection; `spawn` (default: the bridge's setting) starts lokid when
        nobody answers, exactly as lokictl does. `timeout` bounds each read (None: an
        event subscription, which may rightly hear nothing for hours)."""
        spawn = self.spawn if spawn is None else spawn
        try:
            return Client.connect(self.socket, spawn=spawn, timeout=timeout)
        except NotRunning as exc:
            if spawn:
                raise LokidUnavailable(str(exc)) from exc
            raise LokidUnavailable(
                f"lokid is not running on {self.socket}, and starting it is off (--no-spawn "
                "or LOKICTL_NO_SPAWN=1): start it with `lokid serve` or `lokictl ping`"
            ) from exc
        except OSError as exc:
            raise LokidUnavailable(f"cannot connect to lokid on {self.socket}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for client in idle:
            client.close()

    def _send(self, method: str, params: dict[str, Any]) -> tuple[Client, int]:
        """Send on an idle connection, else a new one. A pooled connection that lokid
        closed since (it restarted) fails at the send, before anything reached lokid,
        so that one send is safely repeated on a fresh connection."""
        with self._lock:
            client = self._idle.pop() if self._idle else None
        if client is not None:
            try:
                return client, client.send(method, params)
            except OSError:
                client.close()
        client = self.connect()
        try:
            return client, client.send(method, params)
        except OSError as exc:
            client.close()
            raise LokidUnavailable(f"cannot send to lokid on {self.socket}: {exc}") from exc

    def _put_back(self, client: Client) -> None:
        with self._lock:
            if len(self._idle) < POOL_SIZE:
                self._idle.append(client)
                return
        client.close()
