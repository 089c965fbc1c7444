"""Events across lokid instances: one LISTEN connection per database, read on trio's loop.

Every transaction of a shared queue sends its events with its commit (`pg_notify` on the
project's channel, see lokid/queue/shared.py), and PostgreSQL delivers notifications to
every listener in commit order; each instance, the sender too, publishes them as they
arrive. The connection is read without a thread: trio waits for its socket to be readable,
then libpq parses what came.

A connection that drops loses the notifications sent meanwhile, for good. The listener
reconnects by itself (backing off while the server is away) and then calls each channel's
`resync`, which rewrites that project's views from the database and tells its subscribers to
re-read (`queue.resync`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import psycopg
import trio

from lokid.store.pg_database import RETRYABLE, Database

log = logging.getLogger("lokid.postgres")

RECONNECT_FIRST = 0.05  # seconds before the first reconnect attempt, doubling up to
RECONNECT_MAX = 1.0  # this: a restarted server is back in use within about a second


class Channel:
    __slots__ = ("name", "on_notice", "on_resync")

    def __init__(
        self, name: str, on_notice: Callable[[str], None], on_resync: Callable[[str], None]
    ) -> None:
        self.name = name
        self.on_notice = on_notice
        self.on_resync = on_resync


class Listener:
    """LISTENs on the channels of the shared projects this lokid has open in `db`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._channels: dict[str, list[Channel]] = {}
        self._conn: psycopg.Connection | None = self._listen(self._connect())
        self.reconnects = 0

    def _connect(self) -> psycopg.Connection:
        """A new connection (in a thread when reconnecting: the server may be slow to say no)."""
        return psycopg.connect(self.db.url, **self.db.connect_args)

    def _listen(self, conn: psycopg.Connection) -> psycopg.Connection:
        """On trio's thread: notifications are delivered here, and only here."""
        conn.add_notify_handler(lambda n: self._deliver(n.channel, n.payload))
        for name in list(self._channels):
            conn.execute(f'LISTEN "{name}"')
        return conn

    def add(self, channel: Channel) -> None:
        """Follow a project's channel from now on (a LISTEN now, when connected)."""
        first = channel.name not in self._channels
        self._channels.setdefault(channel.name, []).append(channel)
        if first and self._conn is not None:
            try:
                self._conn.execute(f'LISTEN "{channel.name}"')
            except RETRYABLE as exc:
                self._lost(exc)  # run() reconnects and LISTENs on every channel

    def remove(self, channel: Channel) -> None:
        followers = self._channels.get(channel.name, [])
        if channel in followers:
            followers.remove(channel)
        if not followers:
            self._channels.pop(channel.name, None)

    def _deliver(self, name: str, payload: str) -> None:
        for channel in list(self._channels.get(name, ())):
            try:
                channel.on_notice(payload)
            except Exception:
                log.exception("a notification on %s could not be published", name)

    def _lost(self, exc: BaseException) -> None:
        if self._conn is not None:
            log.warning(
                "lost the notification connection to %s: %s; reconnecting",
                self.db.where,
                self.db.scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else ""),
            )
            self._close()

    def _close(self) -> None:
        """Close the connection, waking `_pump` first if it waits on the socket (a socket
        libpq has already given up on needs no waking: nobody waits on it)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(psycopg.Error, RuntimeError):
            trio.lowlevel.notify_closing(conn.pgconn.socket)
        conn.close()

    async def run(self) -> None:
        """Read notifications until cancelled; reconnect (and resync) whenever the
        connection drops."""
        delay = RECONNECT_FIRST
        while True:
            if self._conn is None:
                try:
                    self._conn = conn = await trio.to_thread.run_sync(self._connect)
                    self._listen(conn)
                except RETRYABLE:
                    self._close()
                    await trio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX)
                    continue
                delay = RECONNECT_FIRST
                self.reconnects += 1
                self.db.up()
                log.info("notifications from %s follow again; resyncing", self.db.where)
                for followers in list(self._channels.values()):
                    for channel in list(followers):
                        channel.on_resync(f"reconnected to {self.db.where}")
            try:
                await self._pump(self._conn)
            except RETRYABLE as exc:
                self._lost(exc)
            except trio.ClosedResourceError:
                pass  # `add` lost the connection and closed it: reconnect
            except Exception:  # never take the daemon down: log, reconnect
                log.exception("reading notifications from %s failed", self.db.where)
                self._close()
                await trio.sleep(RECONNECT_MAX)

    async def _pump(self, conn: psycopg.Connection) -> None:
        pgconn = conn.pgconn
        while True:
            await trio.lowlevel.wait_readable(pgconn.socket)
            if conn.closed:
                raise psycopg.OperationalError("the connection was closed")
            pgconn.consume_input()  # OperationalError when the server went away
            while (note := pgconn.notifies()) is not None:
                self._deliver(note.relname.decode(), note.extra.decode())
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise psycopg.OperationalError("the connection is broken")

    def close(self) -> None:
        self._close()
