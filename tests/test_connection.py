"""One connection on a real socket pair with a small router: no daemon, no app.

Covers what a connection alone decides: concurrent requests answered out of order, cancel,
a msgid reused while in flight, bad frames, errors as replies, stop_reading, on_close."""

from __future__ import annotations

import socket
import struct

import msgspec
import pytest
import trio

from lokid.errors import Conflict
from lokid.server.connection import Connection, Limits
from lokid.server.dispatch import Dispatch, Router
from lokid.wire.daemon import SleepParams
from lokid.wire.framing import FrameDecoder

LIMITS = Limits(max_frame=1024, outbox_limit=64 * 1024, max_inflight=8, spin_us=0)

router = Router()


@router.method("echo.sleep", SleepParams)
async def sleep(call, params: SleepParams) -> dict:
    await trio.sleep(params.seconds)
    return {"slept": params.seconds, "app": call.app}


@router.method("echo.refuse")
def refuse(call, params) -> None:
    raise Conflict("not now", {"why": "test"})


@router.method("echo.boom")
def boom(call, params) -> None:
    raise RuntimeError("a detail no client may see")


def frame(value) -> bytes:
    body = msgspec.msgpack.encode(value)
    return struct.pack(">I", len(body)) + body


class Peer:
    """The client side, blocking, run in a thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(10)
        self.frames = FrameDecoder(1 << 20)
        self.pending: list = []

    def send(self, value) -> None:
        self.sock.sendall(frame(value))

    def read(self):
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.pending += [msgspec.msgpack.decode(b) for b in self.frames.feed(data)]
        return self.pending.pop(0)


def run_connection(client_side, *, app="the app") -> list:
    """Serve one connection while `client_side(peer)` runs in a thread; returns what
    on_close saw."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    closed: list = []
    conn = Connection(ours, LIMITS, Dispatch(router, app), closed.append)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            await trio.to_thread.run_sync(client_side, Peer(theirs), conn)
            theirs.close()

    trio.run(main)
    return closed


def test_requests_run_concurrently_and_are_answered_out_of_order():
    def client(peer: Peer, conn: Connection) -> None:
        peer.send([0, 1, "echo.sleep", {"seconds": 0.3}])
        peer.send([0, 2, "echo.sleep", {"seconds": 0.0}])
        first, second = peer.read(), peer.read()
        assert [first[1], second[1]] == [2, 1]
        assert second[3] == {"slept": 0.3, "app": "the app"}  # the handler saw the app

    closed = run_connection(client)
    assert len(closed) == 1, "on_close runs once, when the client goes"


def test_cancel_answers_cancelled_and_unknown_ids_are_ignored():
    def client(peer: Peer, conn: Connection) -> None:
        peer.send([0, 7, "echo.sleep", {"seconds": 30}])
        peer.send([2, "$/cancel", {"id": 99}])
        peer.send([2, "$/cancel", {"nonsense": True}])
        peer.send([2, "$/cancel", {"id": 7}])
        reply = peer.read()
        assert reply[1] == 7 and reply[2]["code"] == "cancelled"

    run_connection(client)


def test_a_msgid_in_flight_cannot_be_reused():
    def client(peer: Peer, conn: Connection) -> None:
        peer.send([0, 3, "echo.sleep", {"seconds": 0.2}])
        peer.send([0, 3, "echo.sleep", {"seconds": 0}])
        refused = peer.read()
        assert refused[1] == 3 and refused[2]["code"] == "invalid_request"
        assert peer.read()[3]["slept"] == 0.2

    run_connection(client)


def test_errors_become_replies_and_internal_ones_carry_only_an_id():
    def client(peer: Peer, conn: Connection) -> None:
        peer.send([0, 1, "echo.refuse", {}])
        assert peer.read() == [
            1,
            1,
            {"code": "conflict", "message": "not now", "data": {"why": "test"}},
            None,
        ]
        peer.send([0, 2, "echo.boom", {}])
        internal = peer.read()[2]
        assert internal["code"] == "internal" and "detail" not in internal["message"]
        peer.send([0, 3, "no.such", {}])
        assert peer.read()[2]["code"] == "method_not_found"
        peer.send([0, 4, "echo.sleep", {"seconds": "soon"}])
        assert peer.read()[2]["code"] == "invalid_params"
        peer.sock.sendall(struct.pack(">I", 1) + b"\xc1")  # never valid msgpack
        assert peer.read()[2]["code"] == "parse_error"
        peer.send([5, "what"])
        assert peer.read()[2]["code"] == "invalid_request"

    run_connection(client)


def test_a_frame_over_the_limit_is_answered_then_the_connection_closes():
    def client(peer: Peer, conn: Connection) -> None:
        peer.send([0, 1, "echo.sleep", {"seconds": 0}])
        peer.sock.sendall(struct.pack(">I", LIMITS.max_frame + 1))
        replies = {reply[1]: reply for reply in (peer.read(), peer.read())}  # in either order
        assert replies[1][2] is None, "the request before it is still answered"
        assert replies[None][2]["code"] == "too_large"
        assert replies[None][2]["data"] == {"limit": LIMITS.max_frame}
        assert peer.read() is None, "closed: the stream has no boundary left"

    run_connection(client)


@pytest.mark.parametrize("grace", [True, False])
def test_stop_reading_lets_work_in_flight_finish(grace):
    def client(peer: Peer, conn: Connection) -> None:
        peer.send([0, 1, "echo.sleep", {"seconds": 0.2}])
        peer.send([0, 2, "echo.sleep", {"seconds": 0}])
        assert peer.read()[1] == 2  # both were read
        trio.from_thread.run_sync(conn.stop_reading)
        if not grace:
            trio.from_thread.run_sync(conn.cancel_inflight)
        last = peer.read()
        assert last[1] == 1
        assert (last[2] is None) is grace
        assert peer.read() is None, "the connection closes once nothing is in flight"

    run_connection(client)
