"""One client connection: frames in, dispatch, replies and events out.

Requests on a connection run concurrently and may be answered out of order.
A client that sends faster than it reads is slowed, never the daemon: replies
wait for room in the connection's own `Outbox`, and the reader stops taking
requests while `max_inflight` of them are running.

A connection knows only its socket, its limits, what to dispatch through and
whom to tell when it closes; it is the hub's `Subscriber` and a handler's `Peer`.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from lokid.errors import Cancelled, InvalidRequest, LokidError, ParseError, QueueBusy, TooLarge
from lokid.server.batch import Batcher, Ready, SpinPolicy
from lokid.server.dispatch import Call, Dispatch, Method, error_of
from lokid.server.outbox import Outbox, OutboxPool
from lokid.wire.daemon import CancelNoticeParams, Event
from lokid.wire.framing import HEADER, FrameDecoder
from lokid.wire.messages import (
    UNDECODABLE,
    ClientMessage,
    Error,
    Notification,
    Request,
    Response,
)

log = logging.getLogger("lokid.connection")

RECV_SIZE = 256 * 1024
# How long a closing connection may take to hand over its last replies.
CLOSE_FLUSH_SECONDS = 1.0
# A busy-polling reader yields to trio at least this often.
SPIN_CHECKPOINT_NS = 1_000_000

_decoder = msgspec.msgpack.Decoder(ClientMessage)
_encoder = msgspec.msgpack.Encoder()
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may cost (from `Settings`)."""

    max_frame: int
    outbox_limit: int
    max_inflight: int
    spin_us: float
    outbox_total: int = 0  # bytes queued for all clients together (0: no cap)


def encode_message(msg: Response | Notification) -> bytearray:
    """A whole frame: the 4-byte length, then the msgpack body."""
    buf = bytearray(4)
    _encoder.encode_into(msg, buf, 4)
    HEADER.pack_into(buf, 0, len(buf) - 4)
    return buf


def reply_frame(msgid: int | None, error: Error | None, result: Any, max_frame: int) -> bytearray:
    """A reply's frame; a result that cannot be encoded or is too large becomes an error."""
    try:
        frame = encode_message(Response(msgid, error, result))
    except (msgspec.EncodeError, TypeError, OverflowError) as exc:
        frame = encode_message(Response(msgid, error_of(exc, "encoding a reply")))
    if len(frame) - 4 > max_frame:
        message = f"reply of {len(frame) - 4} bytes exceeds the frame limit; ask for less"
        frame = encode_message(Response(msgid, error_of(TooLarge(message), "reply")))
    return frame


def _guess_msgid(frame: bytes) -> int | None:
    """The msgid of a request that failed validation, when one can be read."""
    try:
        msg = msgspec.msgpack.decode(frame)
    except UNDECODABLE:
        return None
    if isinstance(msg, list) and len(msg) >= 2 and msg[0] == 0 and type(msg[1]) is int:
        return msg[1]
    return None


class Connection:
    def __init__(
        self,
        sock: socket.socket,
        limits: Limits,
        dispatch: Dispatch,
        on_close: Callable[[Connection], None] = lambda conn: None,
        peer_pid: int | None = None,
        batcher: Batcher | None = None,
        pool: OutboxPool | None = None,
    ) -> None:
        self.id = next(_ids)
        self.peer_pid = peer_pid
        self.client = "unknown"
        self._sock = sock
        self._dispatch = dispatch
        self._on_close = on_close
        self._max_frame = limits.max_frame
        self._limit = limits.outbox_limit
        self._spin_ns = int(limits.spin_us * 1000)
        self._frames = FrameDecoder(limits.max_frame)
        self._batcher = batcher
        self._read_ns = 0  # when the last bytes were read (perf_counter_ns)
        self._spin = SpinPolicy()
        self.outbox = Outbox(sock, limits.outbox_limit, pool, f"connection {self.id}")
        self._slots = trio.Semaphore(limits.max_inflight)
        self._inflight: dict[int, trio.CancelScope] = {}
        self._read_scope = trio.CancelScope()
        self._idle = trio.lowlevel.ParkingLot()

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        log.debug("connection %d opened (peer pid %s)", self.id, self.peer_pid)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.outbox.run_writer)
                client_left = False
                with self._read_scope:
                    client_left = await self._read_loop(nursery)
                if self._batcher is not None:
                    self._batcher.flush()  # what this client sent is answered first
                if client_left:
                    # Nobody is left to answer; abandon the work.
                    nursery.cancel_scope.cancel()
                else:
                    await self._wait_inflight()
                    await self.outbox.flush(CLOSE_FLUSH_SECONDS)
                    nursery.cancel_scope.cancel()
        finally:
            self._on_close(self)
            self.outbox.close()
            self._sock.close()
            log.debug("connection %d closed", self.id)

    def stop_reading(self) -> None:
        """Take no more requests; those in flight finish (the daemon bounds the wait)."""
        self._read_scope.cancel()

    def cancel_inflight(self) -> None:
        for scope in self._inflight.values():
            scope.cancel()

    async def _wait_inflight(self) -> None:
        while self._inflight:
            await self._idle.park()

    # -- reading -----------------------------------------------------------------------

    async def _read_loop(self, nursery: trio.Nursery) -> bool:
        """Returns True when the client went away, False when reading must stop."""
        sock = self._sock
        clock = time.perf_counter_ns
        last_checkpoint = clock()
        while True:
            try:
                data = self._spin_recv()
                if data is None:
                    await trio.lowlevel.wait_readable(sock)
                    last_checkpoint = clock()
                    data = sock.recv(RECV_SIZE)
                elif clock() - last_checkpoint > SPIN_CHECKPOINT_NS:
                    # A client that always has the next request ready never parks:
                    # yield now and then so cancellation and other tasks get a turn.
                    await trio.lowlevel.checkpoint()
                    last_checkpoint = clock()
            except BlockingIOError:
                continue
            except OSError:
                return True
            if not data:
                if self._frames.pending:
                    log.info(
                        "connection %d closed inside a frame (%d bytes discarded)",
                        self.id,
                        self._frames.pending,
                    )
                return True
            batcher = self._batcher
            if batcher is not None:
                now = self._read_ns = clock()
                batcher.read_by(self, now)
            for frame in self._frames.feed(data):
                await self._on_frame(frame, nursery)
            if batcher is not None and batcher.pending:
                batcher.ready(self, now)
            if self.outbox.backlog > self._limit:
                await self.outbox.wait_room()  # replies of a batch: read more once they left
            if (too_large := self._frames.error) is not None:
                log.warning("connection %d: %s; closing it", self.id, too_large)
                await self._send_error(None, TooLarge(str(too_large), {"limit": too_large.limit}))
                return False

    def _spin_recv(self) -> bytes | None:
        """Poll the socket briefly before parking in epoll (adaptive busy-polling).

        Parking and waking through trio's epoll loop costs ~40 us per request on a
        2-core machine, more than the request itself. A client in a conversation
        usually sends its next request within microseconds of our reply, so we look
        for it for up to `spin_us` -- but only when no other task could use the
        CPU and our reply has left, so nobody waits on the spin.
        """
        if not self._spin_ns or self.outbox.backlog:
            return None
        clock = time.perf_counter_ns
        start = clock()
        batcher = self._batcher
        if batcher is not None and (batcher.pending or not batcher.alone(self, start)):
            return None
        if trio.lowlevel.current_statistics().tasks_runnable or not self._spin.should_spin():
            return None
        deadline = start + self._spin_ns
        sock = self._sock
        while clock() < deadline:
            try:
                data = sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            self._spin.record(True)
            return data
        self._spin.record(False)
        return None

    async def _on_frame(self, frame: bytes, nursery: trio.Nursery) -> None:
        try:
            msg = _decoder.decode(frame)
        except msgspec.ValidationError as exc:
            detail = "expected [0, msgid, method, params] or [2, method, params]"
            await self._send_error(_guess_msgid(frame), InvalidRequest(f"{detail}: {exc}"))
            return
        except UNDECODABLE as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            await self._send_error(None, ParseError(f"frame body is not valid msgpack: {why}"))
            return
        if type(msg) is Request:
            await self._on_request(msg, nursery)
        else:
            self._on_notification(msg)

    def _on_notification(self, msg: Notification) -> None:
        if msg.method != "$/cancel":
            log.debug("connection %d: ignoring notification %r", self.id, msg.method)
            return
        try:
            params = msgspec.convert(msg.params, CancelNoticeParams)
        except (msgspec.ValidationError, *UNDECODABLE):
            log.debug("connection %d: malformed $/cancel ignored", self.id)
            return
        scope = self._inflight.get(params.id)
        if scope is not None:
            scope.cancel()

    # -- dispatch ----------------------------------------------------------------------

    async def _on_request(self, req: Request, nursery: trio.Nursery) -> None:
        try:
            method = self._dispatch.lookup(req.method)
            if req.msgid in self._inflight:
                raise InvalidRequest(f"msgid {req.msgid} is already in flight on this connection")
            params = method.decode_params(req.params)
        except LokidError as exc:
            await self._send_error(req.msgid, exc)
            return
        call = self._dispatch.call(self, req.msgid)
        batcher = self._batcher
        if batcher is not None:
            if method.batch:
                if batcher.pending or not batcher.alone(self, self._read_ns):
                    batcher.add(Ready(self, method, call, params))
                    return
                self._run_alone(method, call, params)  # a lone client: nothing to batch with
                return
            if batcher.pending:
                batcher.flush()  # this client's earlier requests run before this one
        if not method.is_async:
            await self._reply(req.msgid, *self._call_sync(method, call, params))
            return
        await self._slots.acquire()
        scope = trio.CancelScope()
        self._inflight[req.msgid] = scope
        if method.inline:
            await self._call_async(method, call, params, scope)
        else:
            nursery.start_soon(self._call_async, method, call, params, scope)

    def _run_alone(self, method: Method, call: Call, params: Any) -> None:
        """A batchable request of the only client sending: run it now, as a batch of one
        would be (its own transaction), without the batch's bookkeeping."""
        try:
            result, error = method.handler(call, params), None
        except QueueBusy:  # its project is a bulk enqueue's: it waits in the batcher
            assert self._batcher is not None
            self._batcher.defer(Ready(self, method, call, params))
            return
        except Exception as exc:
            result, error = None, error_of(exc, method.name)
        self.reply_now(call.msgid, error, result)

    def _call_sync(self, method: Method, call: Call, params: Any) -> tuple[Error | None, Any]:
        try:
            return None, method.handler(call, params)
        except Exception as exc:
            return error_of(exc, method.name), None

    async def _call_async(
        self, method: Method, call: Call, params: Any, scope: trio.CancelScope
    ) -> None:
        error: Error | None = None
        result: Any = None
        try:
            with scope:
                try:
                    result = await method.handler(call, params)
                except Exception as exc:
                    error = error_of(exc, method.name)
            if scope.cancelled_caught:
                error, result = error_of(Cancelled("request cancelled"), method.name), None
            await self._reply(call.msgid, error, result)
        finally:
            del self._inflight[call.msgid]
            self._slots.release()
            if not self._inflight:
                self._idle.unpark_all()

    # -- writing -----------------------------------------------------------------------

    async def _reply(self, msgid: int | None, error: Error | None, result: Any) -> None:
        await self.outbox.send_reply(reply_frame(msgid, error, result, self._max_frame))

    def reply_now(self, msgid: int, error: Error | None, result: Any) -> None:
        """A batch's reply: queued at once; the read loop waits for room before reading on."""
        self.outbox.push_reply(reply_frame(msgid, error, result, self._max_frame))

    async def _send_error(self, msgid: int | None, exc: LokidError) -> None:
        await self._reply(msgid, error_of(exc, "request"), None)

    # -- as the hub's Subscriber and a handler's Peer -----------------------------------

    def offer_event(self, frame: bytes | bytearray) -> bool:
        return self.outbox.offer(frame)

    def on_space(self, callback: Callable[[], None]) -> None:
        self.outbox.on_space(callback)

    async def push(self, event: Event) -> None:
        await self.outbox.send_reply(encode_message(Notification("event", event)))
