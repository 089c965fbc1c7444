"""The outbox on a real socket pair: straight writes, the byte limit, backpressure on
replies, refused events and the wake-up once it drains, and a peer that goes away."""

from __future__ import annotations

import socket

import trio

from lokid.server.outbox import Outbox

LIMIT = 64 * 1024


def pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    for s in (ours, theirs):  # small kernel buffers, so the limit is reached quickly
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return ours, theirs


def read_all(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(10)
    data = b""
    while len(data) < n:
        data += sock.recv(n - len(data))
    return data


def test_a_reader_that_keeps_up_gets_everything_without_a_queue():
    ours, theirs = pair()
    outbox = Outbox(ours, LIMIT)

    async def main() -> None:
        await outbox.send_reply(b"hello")
        assert outbox.offer(b" world")
        assert outbox.backlog == 0

    trio.run(main)
    assert read_all(theirs, 11) == b"hello world"


def test_events_past_the_limit_are_refused_and_space_is_announced_at_half():
    ours, theirs = pair()
    outbox = Outbox(ours, LIMIT)
    told: list[int] = []
    outbox.on_space(lambda: told.append(outbox.backlog))
    chunk = b"x" * 8192

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.run_writer)
            offered = 0
            while outbox.offer(chunk):
                offered += 1
            assert outbox.backlog <= LIMIT + len(chunk)
            assert not told
            received = await trio.to_thread.run_sync(read_all, theirs, offered * len(chunk))
            assert received == chunk * offered
            with trio.fail_after(10):
                while not told:
                    await trio.sleep(0.001)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert told[0] <= LIMIT // 2


def test_a_reply_waits_for_room_and_is_never_dropped():
    ours, theirs = pair()
    outbox = Outbox(ours, 16 * 1024)
    big = b"r" * (64 * 1024)
    sent = trio.Event()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.run_writer)

            async def reply() -> None:
                await outbox.send_reply(big)
                sent.set()

            nursery.start_soon(reply)
            await trio.sleep(0.05)
            assert not sent.is_set(), "the producer waits while the client does not read"
            received = await trio.to_thread.run_sync(read_all, theirs, len(big))
            assert received == big
            with trio.fail_after(10):
                await sent.wait()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_peer_that_goes_away_breaks_the_outbox_quietly():
    ours, theirs = pair()
    outbox = Outbox(ours, LIMIT)
    theirs.close()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.run_writer)
            for _ in range(100):
                await outbox.send_reply(b"y" * 8192)
                if outbox.broken:
                    break
            assert outbox.broken
            assert not outbox.offer(b"event")
            await outbox.flush(1)  # returns at once
            with trio.fail_after(5):
                while True:  # the writer ends once broken
                    await trio.sleep(0.01)
                    if not nursery.child_tasks:
                        break

    trio.run(main)
