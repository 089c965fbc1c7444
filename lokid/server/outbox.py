"""Bytes waiting for one client, and the only code that writes its socket.

A send first goes straight to the non-blocking socket; only what the kernel
does not take is queued for the writer task. So a reader that keeps up pays no
task switch, and a reader that stops costs at most `limit` bytes of memory:
replies then make their producer wait (backpressure on that connection only),
events are refused and the hub turns the loss into a `resync`.
"""

import socket
from collections import deque
from collections.abc import Callable

import trio


class Outbox:
    __slots__ = (
        "_backlog",
        "_chunks",
        "_data_lot",
        "_limit",
        "_on_space",
        "_refused",
        "_sock",
        "_space_lot",
        "broken",
    )

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self._sock = sock
        self._limit = limit
        self._chunks: deque[memoryview] = deque()
        self._backlog = 0
        self._data_lot = trio.lowlevel.ParkingLot()
        self._space_lot = trio.lowlevel.ParkingLot()
        self._on_space: list[Callable[[], None]] = []
        self._refused = False
        self.broken = False

    @property
    def backlog(self) -> int:
        return self._backlog

    def on_space(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the backlog drains after an `offer` was refused."""
        self._on_space.append(callback)

    def _push(self, data: bytes | bytearray) -> None:
        if self.broken:
            return
        view = memoryview(data)
        if not self._chunks:
            try:
                sent = self._sock.send(view)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._break()
                return
            if sent == len(view):
                return
            view = view[sent:]
        self._chunks.append(view)
        self._backlog += len(view)
        self._data_lot.unpark_all()

    async def send_reply(self, data: bytes | bytearray) -> None:
        """Queue a reply; never dropped, so wait while the backlog is over the limit."""
        self._push(data)
        while self._backlog > self._limit and not self.broken:
            await self._space_lot.park()

    def offer(self, data: bytes | bytearray) -> bool:
        """Queue an event if it fits in the limit; False means it was dropped."""
        if self.broken:
            return False
        # An empty backlog takes any event, so a refusal always leaves the writer
        # something to drain, and the drain always fires the on_space callbacks.
        if self._backlog and self._backlog + len(data) > self._limit:
            self._refused = True
            return False
        self._push(data)
        return True

    async def run_writer(self) -> None:
        """Drain the queue whenever the socket is writable; runs for the connection's life."""
        sock = self._sock
        while not self.broken:
            if not self._chunks:
                await self._data_lot.park()
                continue
            await trio.lowlevel.wait_writable(sock)
            self._flush_nowait()
            if self._backlog <= self._limit:
                self._space_lot.unpark_all()
            # Half empty before telling the hub, so a resync is not refused at once.
            if self._refused and self._backlog <= self._limit // 2:
                self._refused = False
                for callback in self._on_space:
                    callback()

    def _flush_nowait(self) -> None:
        chunks = self._chunks
        while chunks:
            view = chunks[0]
            try:
                sent = self._sock.send(view)
            except BlockingIOError:
                return
            except OSError:
                self._break()
                return
            self._backlog -= sent
            if sent < len(view):
                chunks[0] = view[sent:]
                return
            chunks.popleft()

    async def flush(self, timeout: float) -> None:
        """Wait up to `timeout` for the backlog to reach the kernel (used on close)."""
        with trio.move_on_after(timeout):
            while self._chunks and not self.broken:
                await trio.lowlevel.wait_writable(self._sock)
                self._flush_nowait()

    def _break(self) -> None:
        self.broken = True
        self._chunks.clear()
        self._backlog = 0
        self._data_lot.unpark_all()
        self._space_lot.unpark_all()
