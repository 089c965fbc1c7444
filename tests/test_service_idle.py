"""Idle exit: the pure timing rule on an injected clock, the service on trio's mock clock,
and a socket-activated lokid that leaves once its last client has gone."""

from __future__ import annotations

import functools
import os
import socket
import stat

import pytest
import trio
import trio.testing
from service_support import ACTIVATE, Activated

from lokid.app import build_app, build_daemon
from lokid.daemon import Daemon
from lokid.hub import Hub
from lokid.lifecycle import Lifecycle
from lokid.server.connection import Limits
from lokid.server.dispatch import Dispatch, Router
from lokid.service.activation import adopt_fd
from lokid.service.idle import IdleTimer, idle_exit, is_idle, poll_interval
from lokid.settings import Settings
from support import wait_until


def test_idle_timer_counts_from_the_first_idle_moment():
    timer = IdleTimer(5)
    assert timer.update(False, now=100) is None
    assert timer.update(True, now=101) == 5
    assert timer.update(True, now=104) == 2
    assert timer.update(True, now=106) == 0
    assert timer.update(True, now=107) < 0


def test_being_busy_starts_the_count_again():
    timer = IdleTimer(5)
    timer.update(True, now=0)
    assert timer.update(True, now=4) == 1
    assert timer.update(False, now=4.5) is None
    assert timer.update(True, now=6) == 5


def test_poll_interval_stays_reasonable():
    assert poll_interval(0.5) == pytest.approx(0.1)
    assert poll_interval(0) == 0.02
    assert poll_interval(3600) == 1.0


def _app(tmp_short):
    settings = Settings(socket=tmp_short / "unused.sock", state_dir=tmp_short / "state")
    return build_app(settings, containers=False)


class BusyArea:
    """An area that is busy until a time on trio's clock; its check may fail at first."""

    def __init__(self, busy_until: float, failures: int = 0) -> None:
        self.busy_until = busy_until
        self.failures = failures
        self.calls: list[float] = []

    async def run(self) -> None:
        pass

    def reload(self) -> None:
        pass

    def close(self) -> None:
        pass

    def idle(self) -> bool:
        self.calls.append(trio.current_time())
        if len(self.calls) <= self.failures:
            raise RuntimeError("area exploded")
        return trio.current_time() >= self.busy_until


def _stop_time(areas: list, limit: float) -> float:
    """Run idle exit on a mock clock over a daemon of `areas`."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    lifecycle = Lifecycle()
    limits = Limits(max_frame=1024, outbox_limit=1024, max_inflight=1, spin_us=0)
    dispatch = Dispatch(Router(), None)
    daemon = Daemon(lifecycle, Hub(bytes), dispatch, areas, limits=limits, shutdown_grace=1)

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(idle_exit(limit, lifecycle, daemon.areas_idle))
            await lifecycle.wait_stopping()
            return trio.current_time()

    return trio.run(main, clock=clock)


def test_the_service_waits_for_every_area_then_the_limit():
    stopped = _stop_time([BusyArea(busy_until=0), BusyArea(busy_until=100)], limit=30)
    assert 130 <= stopped <= 130 + poll_interval(30)


def test_a_failing_idle_check_counts_as_busy():
    area = BusyArea(busy_until=0, failures=49)
    stopped = _stop_time([area], limit=10)
    assert stopped >= area.calls[49] + 10


def test_a_connection_waiting_to_be_accepted_is_a_client(tmp_short):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(tmp_short / "s.sock"))
        listener.listen()
        assert is_idle((), lambda: True, listener)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(tmp_short / "s.sock"))
            assert not is_idle((), lambda: True, listener)
            listener.accept()[0].close()
            assert is_idle((), lambda: True, listener)
        assert not is_idle([object()], lambda: True, listener), "a connected client"
        assert not is_idle((), lambda: False, listener), "a busy area"


def test_a_client_connecting_as_lokid_stops_is_left_for_the_next_lokid(tmp_short):
    """The manager keeps its copy of the socket; a connection lokid has not accepted when
    it decides to stop must stay in the backlog for the next lokid, never be accepted and
    dropped unread. The accept wake-up and the stop race in the same scheduler batch, in
    an order trio varies, so a few rounds cover both orders."""
    path = tmp_short / "managed.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as manager:
        manager.bind(str(path))
        manager.listen()
        for round_ in range(12):
            app = _app(tmp_short / f"d{round_}")
            daemon = build_daemon(app)
            listener = adopt_fd(os.dup(manager.fileno()), "the test's manager")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:

                async def main(daemon=daemon, app=app, listener=listener, client=client) -> None:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(
                            functools.partial(daemon.serve, listener, handle_signals=False)
                        )
                        client.connect(str(path))
                        client.sendall(b"first request")
                        app.lifecycle.request_shutdown("test")

                trio.run(main)
                manager.setblocking(False)
                conn, _ = manager.accept()  # BlockingIOError: lokid took it and dropped it
                with conn:
                    conn.settimeout(5)
                    assert conn.recv(64) == b"first request"


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate missing")
def test_idle_exit_after_the_last_client_leaves(tmp_short):
    daemon = Activated(tmp_short, "--idle-exit", "0.5")
    try:
        daemon.start()
        with daemon.client() as client:
            client.call("ping")
            # Connected for three times the limit, by lokid's own clock: still serving.
            wait_until(lambda: client.call("daemon.status")["uptime_s"] > 1.5, 10, "uptime")
            assert daemon.proc.poll() is None
        assert daemon.proc.wait(10) == 0
    finally:
        daemon.kill()
    log = daemon.log()
    assert "shutting down (idle for 0.5s)" in log, log
    assert stat.S_ISSOCK(os.lstat(daemon.socket).st_mode), "the manager's socket stays"
