"""sd_notify: a datagram listener standing in for systemd sees lokid's state changes in order."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys

import pytest
from service_support import ACTIVATE, Activated

from lokid.service.notify import Notifier, notify_address, watchdog_interval
from support import Lokid, wait_until


class NotifySocket:
    """What systemd listens on: each datagram is `KEY=value` lines."""

    def __init__(self, address: str) -> None:
        self.name = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(notify_address(address))
        self.sock.settimeout(15)
        self.messages: list[dict[str, str]] = []

    def next(self) -> dict[str, str]:
        lines = self.sock.recv(4096).decode().split("\n")
        message = dict(line.split("=", 1) for line in lines)
        self.messages.append(message)
        return message

    def until(self, key: str) -> dict[str, str]:
        while True:
            message = self.next()
            if key in message:
                return message

    def keys(self) -> list[str]:
        return [key for message in self.messages for key in message]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_short):
    listener = NotifySocket(str(tmp_short / "notify.sock"))
    yield listener
    listener.close()


def test_ready_status_watchdog_reload_and_stopping_in_order(tmp_short, notify):
    env = {"NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": "200000"}
    daemon = Lokid(tmp_short, env=env).start(wait=False)
    try:
        first = notify.next()
        assert first["READY"] == "1"
        assert first["STATUS"] == "serving 0 clients, 0 projects"
        assert daemon.call("ping"), "READY=1 means it answers"
        notify.until("WATCHDOG")
        notify.until("WATCHDOG")
        with daemon.client() as client:
            client.call("ping")
            assert notify.until("STATUS")["STATUS"] == "serving 1 client, 0 projects"
        daemon.signal(signal.SIGHUP)
        reloading = notify.until("RELOADING")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        assert notify.next()["READY"] == "1"
        daemon.signal(signal.SIGTERM)
        stopping = notify.until("STOPPING")
        assert stopping["STATUS"] == "stopping"
        assert daemon.proc.wait(20) == 0
    finally:
        daemon.kill()
    notify.sock.settimeout(0)
    with pytest.raises(BlockingIOError):
        notify.next()  # nothing after STOPPING=1: no watchdog pings while stopping
    keys = notify.keys()
    assert keys[:2] == ["READY", "STATUS"]
    assert keys.index("WATCHDOG") < keys.index("RELOADING") < keys.index("STOPPING")
    assert keys[-2:] == ["STOPPING", "STATUS"]


def test_abstract_notify_socket(tmp_short):
    notify = NotifySocket(f"@lokid-test-{secrets.token_hex(6)}")
    daemon = Lokid(tmp_short, env={"NOTIFY_SOCKET": notify.name}).start(wait=False)
    try:
        assert notify.next()["READY"] == "1"
        assert daemon.stop() == 0
        assert notify.until("STOPPING")["STOPPING"] == "1"
    finally:
        daemon.kill()
        notify.close()


def test_watchdog_pid_names_the_process_that_must_ping(tmp_short, notify):
    """`sh -c 'WATCHDOG_PID=$$ exec lokid'`: the pid is lokid's own once exec'd."""
    sock = tmp_short / "run" / "lokid.sock"
    env = {
        **os.environ,
        "XDG_STATE_HOME": str(tmp_short / "state"),
        "NOTIFY_SOCKET": notify.name,
        "WATCHDOG_USEC": "100000",
    }
    serve = f'exec "{sys.executable}" -m lokid serve --socket "{sock}"'
    proc = subprocess.Popen(["sh", "-c", f"WATCHDOG_PID=$$ {serve}"], env=env)
    try:
        assert notify.next()["READY"] == "1"
        notify.until("WATCHDOG")
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def test_watchdog_interval_is_half_the_timeout_for_our_pid_only():
    assert watchdog_interval({"WATCHDOG_USEC": "200000"}, pid=5) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "5"}, pid=5) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "6"}, pid=5) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid=5) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=5) is None
    assert watchdog_interval({}, pid=5) is None


def test_notify_addresses():
    assert notify_address("/run/user/1000/systemd/notify") == "/run/user/1000/systemd/notify"
    assert notify_address("@abstract") == b"\0abstract"
    assert notify_address("vsock:2:1234") is None
    assert notify_address("@") is None


def test_from_env_unsets_the_variables_children_would_inherit(tmp_short):
    env = {"NOTIFY_SOCKET": str(tmp_short / "n"), "WATCHDOG_USEC": "10", "WATCHDOG_PID": "3"}
    env["PATH"] = "/bin"
    notifier = Notifier.from_env(env, pid=3)
    assert notifier.enabled and notifier.watchdog == 0.000005
    assert env == {"PATH": "/bin"}
    assert not notifier.ping(), "nobody listens: sending fails quietly"
    notifier.close()


def test_without_notify_socket_nothing_is_sent():
    notifier = Notifier.from_env({}, pid=1)
    assert not notifier.enabled
    assert not notifier.ready("x")


def test_a_full_notify_queue_never_blocks(tmp_short):
    path = tmp_short / "full.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        notifier = Notifier(str(path))
        sent = [notifier.ping() for _ in range(5000)]
        assert sent[0] and not sent[-1], "the queue filled up and send gave up at once"
        notifier.close()
        wait_until(lambda: receiver.recv(64), 5, "a datagram")


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate missing")
def test_socket_activated_lokid_reports_ready_after_the_first_connection(tmp_short, notify):
    daemon = Activated(tmp_short, env={"NOTIFY_SOCKET": notify.name})
    try:
        daemon.start()
        with daemon.client() as client:
            msgid = client.send("ping")
            assert notify.next()["READY"] == "1"
            assert "time" in client.result(msgid)
        assert daemon.stop() == 0
        assert notify.until("STOPPING")["STOPPING"] == "1"
    finally:
        daemon.kill()
