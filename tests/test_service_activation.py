"""Socket activation: lokid serves the socket systemd made, and never loses a first request."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys

import pytest
from service_support import ACTIVATE, Activated

from lokid.server.listener import Listener
from lokid.service.activation import ActivationError, PassedFd, adopt_fd, listen_fds, pick

needs_activate = pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate missing")


@pytest.fixture
def activated(tmp_short):
    daemon = Activated(tmp_short)
    yield daemon
    daemon.kill()


@needs_activate
def test_a_request_sent_before_lokid_started_is_answered(activated):
    activated.start()
    assert not activated.is_lokid(), "lokid must not run before the first connection"
    # Freeze the manager: nothing can start lokid while the client connects and sends.
    activated.proc.send_signal(signal.SIGSTOP)
    try:
        client = activated.client()
        msgid = client.send("ping")
        assert not activated.is_lokid()
    finally:
        activated.proc.send_signal(signal.SIGCONT)
    with client:
        assert "time" in client.result(msgid)
        assert client.call("hello", {"client": "test"})["pid"] == activated.proc.pid
    assert activated.is_lokid()
    assert "serving the socket" in activated.log()


@needs_activate
def test_lokid_never_unlinks_the_socket_it_was_given(activated):
    activated.start()
    with activated.client() as client:
        client.call("ping")
    assert activated.stop() == 0
    assert stat.S_ISSOCK(os.lstat(activated.socket).st_mode)
    assert not activated.socket.with_name("lokid.sock.lock").exists()


def test_listen_fds_are_ours_only_when_listen_pid_is_our_pid():
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "lokid", "HOME": "/h"}
    assert listen_fds(env, pid=4242) == []
    assert env == {"HOME": "/h"}, "the variables are unset either way"


def test_listen_fds_start_at_3_and_are_named():
    env = {"LISTEN_PID": "7", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "other:lokid"}
    fds = listen_fds(env, pid=7)
    assert fds == [PassedFd(3, "other"), PassedFd(4, "lokid"), PassedFd(5, "unknown")]
    assert pick(fds) == PassedFd(4, "lokid")
    assert pick([PassedFd(3, "unknown")]) == PassedFd(3, "unknown")
    assert env == {}


def test_listen_fds_tolerates_garbage():
    assert listen_fds({"LISTEN_PID": "7", "LISTEN_FDS": "x"}, pid=7) == []
    assert listen_fds({"LISTEN_PID": "7"}, pid=7) == []


def _adopt_copy(sock: socket.socket) -> Listener:
    return adopt_fd(os.dup(sock.fileno()), "test")


def test_adopts_a_listening_unix_stream_socket(tmp_short):
    path = tmp_short / "s.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        sock.listen()
        listener = _adopt_copy(sock)
        assert listener.path is None
        assert not os.get_inheritable(listener.sock.fileno())
        listener.close()
    assert path.exists(), "closing an adopted listener leaves the file to its owner"


@pytest.mark.parametrize(
    ("family", "kind", "listen"),
    [
        (socket.AF_UNIX, socket.SOCK_DGRAM, False),
        (socket.AF_UNIX, socket.SOCK_STREAM, False),
        (socket.AF_INET, socket.SOCK_STREAM, True),
    ],
)
def test_refuses_other_sockets(tmp_short, family, kind, listen):
    with socket.socket(family, kind) as sock:
        sock.bind(str(tmp_short / "s.sock") if family == socket.AF_UNIX else ("127.0.0.1", 0))
        if listen:
            sock.listen()
        fd = os.dup(sock.fileno())
        with pytest.raises(ActivationError, match="not a listening unix stream socket"):
            adopt_fd(fd, "test")
        os.fstat(fd)  # refused, but not closed behind the manager's back
        os.close(fd)


def test_refuses_a_file(tmp_short):
    fd = os.open(tmp_short / "f", os.O_CREAT | os.O_RDWR, 0o600)
    with pytest.raises(ActivationError, match="not a socket"):
        adopt_fd(fd, "test")
    os.close(fd)


def test_idle_exit_needs_an_inherited_socket(tmp_short):
    sock = tmp_short / "run" / "lokid.sock"
    cmd = [sys.executable, "-m", "lokid", "serve", "--socket", str(sock), "--idle-exit", "1"]
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_short / "state")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "--idle-exit needs a socket passed by systemd or launchd" in done.stderr
    assert not sock.exists()


@needs_activate
def test_lokid_serves_every_client_on_the_inherited_socket(activated):
    """The manager hands over the listening socket, not one connection."""
    activated.start()
    with activated.client() as first:
        first.call("ping")
        with activated.client() as second:
            assert second.call("daemon.status")["connections"] == 2
