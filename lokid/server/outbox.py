"""Bytes waiting for one client, and the only code that writes its socket.

A send first goes straight to the non-blocking socket; only what the kernel does not take
is queued for the writer task. So a reader that keeps up pays no task switch, and a reader
that stops costs what is queued and no more: the queue is one buffer of encoded bytes (no
object per message), so `backlog` is what it really holds. Past `limit`, replies make
their producer wait (backpressure on that connection only) and events are refused, which
the hub turns into a `resync`.

All outboxes share an `OutboxPool`, the daemon-wide cap: past it events are refused for
everyone with a backlog, and the clients with the largest backlogs (the slowest readers)
are disconnected, with the reason in the log, until the total is back under the cap.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable

import trio

log = logging.getLogger("lokid.outbox")

# Sent bytes are cut from the front of the buffer once they are this many and half of it.
COMPACT_AFTER = 256 * 1024
# After cutting off the slowest clients the total is brought this far under the cap.
SHED_TO = 0.75


class OutboxPool:
    """The bytes held for every client together, and the daemon-wide cap on them."""

    def __init__(self, cap: int | None = None) -> None:
        self.cap = cap
        self.total = 0
        self.members: set[Outbox] = set()
        self.cut_offs = 0

    def over(self, more: int = 0) -> bool:
        return self.cap is not None and self.total + more > self.cap

    def shed(self) -> None:
        """Disconnect the slowest readers until the total is well under the cap."""
        assert self.cap is not None
        goal = self.cap * SHED_TO
        while self.total > goal:
            slowest = max(self.members, key=lambda o: o.held, default=None)
            if slowest is None or not slowest.held:
                return
            slowest.cut_off(
                f"{slowest.backlog} bytes queued unread while all clients' queued bytes "
                f"passed lokid's cap of {self.cap} (LOKID_OUTBOX_TOTAL)"
            )
            self.cut_offs += 1


class Outbox:
    __slots__ = (
        "__weakref__",
        "_buf",
        "_data_lot",
        "_drained_lot",
        "_limit",
        "_off",
        "_on_space",
        "_pool",
        "_refused",
        "_sock",
        "_space_lot",
        "broken",
        "name",
        "reason",
    )

    def __init__(
        self, sock: socket.socket, limit: int, pool: OutboxPool | None = None, name: str = ""
    ) -> None:
        self._sock = sock
        self._limit = limit
        self._pool = pool if pool is not None else OutboxPool()
        self._pool.members.add(self)
        self.name = name or f"fd {sock.fileno()}"
        self._buf = bytearray()
        self._off = 0  # bytes at the front of _buf already sent
        self._data_lot = trio.lowlevel.ParkingLot()
        self._space_lot = trio.lowlevel.ParkingLot()
        self._drained_lot = trio.lowlevel.ParkingLot()
        self._on_space: list[Callable[[], None]] = []
        self._refused = False
        self.broken = False
        self.reason: str | None = None  # why lokid cut the client off, if it did

    @property
    def backlog(self) -> int:
        """Bytes queued and not yet taken by the kernel."""
        return len(self._buf) - self._off

    @property
    def held(self) -> int:
        """Bytes of memory the queue holds (the backlog, plus a sent front not yet cut)."""
        return len(self._buf)

    def on_space(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the backlog drains after an `offer` was refused."""
        self._on_space.append(callback)

    def _push(self, data: bytes | bytearray) -> None:
        if self.broken:
            return
        if not self._buf:
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._break()
                return
            if sent == len(data):
                return
            with memoryview(data) as view:
                self._buf += view[sent:]
            added = len(data) - sent
        else:
            self._buf += data
            added = len(data)
        pool = self._pool
        pool.total += added
        self._data_lot.unpark_all()
        if pool.over():
            pool.shed()

    def push_reply(self, data: bytes | bytearray) -> None:
        """Queue a reply now, whatever the backlog (never dropped); the caller applies the
        backpressure (`wait_room`) before taking more requests from this client."""
        self._push(data)

    async def wait_room(self) -> None:
        """Return once the backlog is within the limit (or the client is gone)."""
        while self.backlog > self._limit and not self.broken:
            await self._space_lot.park()

    async def send_reply(self, data: bytes | bytearray) -> None:
        """Queue a reply; never dropped, so wait while the backlog is over the limit."""
        self._push(data)
        await self.wait_room()

    def offer(self, data: bytes | bytearray) -> bool:
        """Queue an event if it fits in the limit; False means it was dropped."""
        if self.broken:
            return False
        # An empty backlog takes any event, so a refusal always leaves the writer
        # something to drain, and the drain always fires the on_space callbacks.
        backlog = self.backlog
        if backlog and (backlog + len(data) > self._limit or self._pool.over(len(data))):
            self._refused = True
            return False
        self._push(data)
        return True

    async def run_writer(self) -> None:
        """Drain the queue whenever the socket is writable; runs for the connection's life."""
        sock = self._sock
        while not self.broken:
            if not self._buf:
                await self._data_lot.park()
                continue
            await trio.lowlevel.wait_writable(sock)
            self._flush_nowait()
            backlog = self.backlog
            if backlog <= self._limit:
                self._space_lot.unpark_all()
            if not backlog:
                self._drained_lot.unpark_all()
            # Half empty before telling the hub, so a resync is not refused at once.
            if self._refused and backlog <= self._limit // 2:
                self._refused = False
                for callback in self._on_space:
                    callback()

    def _flush_nowait(self) -> None:
        buf = self._buf
        while self._off < len(buf):
            sent = failed = 0
            with memoryview(buf) as view, view[self._off :] as rest:
                try:
                    sent = self._sock.send(rest)
                except BlockingIOError:
                    pass
                except OSError:
                    failed = True
            if failed:  # (after the views are released: _break resizes the buffer)
                self._break()
                return
            if not sent:
                break
            self._off += sent
        self._compact()

    def _compact(self) -> None:
        buf, off = self._buf, self._off
        if off == len(buf):
            self._pool.total -= len(buf)
            buf.clear()
            self._off = 0
        elif off >= COMPACT_AFTER and off * 2 >= len(buf):
            del buf[:off]
            self._pool.total -= off
            self._off = 0

    async def flush(self, timeout: float) -> None:
        """Wait up to `timeout` for the writer task to hand the backlog to the kernel (used
        on close). Only the writer touches the socket, so this never races it."""
        with trio.move_on_after(timeout):
            while self._buf and not self.broken:
                await self._drained_lot.park()

    def cut_off(self, reason: str) -> None:
        """Disconnect this client: drop what is queued and shut the socket (its reader sees
        the end of the stream and the connection closes)."""
        if self.broken:
            return
        self.reason = reason
        log.warning("disconnecting client %s: %s", self.name, reason)
        self._break()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """The connection is gone: forget it in the pool."""
        self._break()
        self._pool.members.discard(self)

    def _break(self) -> None:
        self.broken = True
        self._pool.total -= len(self._buf)
        self._buf.clear()
        self._off = 0
        self._data_lot.unpark_all()
        self._space_lot.unpark_all()
        self._drained_lot.unpark_all()
