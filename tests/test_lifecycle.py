"""The daemon's life: socket safety, one instance per path, signals, peer checks."""

import logging
import os
import signal
import socket
import stat
import subprocess
import sys

import pytest
import trio

from lokictl import Client, DaemonError
from lokid.app import build_app, build_daemon
from lokid.errors import Conflict
from lokid.server.dispatch import Router
from lokid.server.listener import Listener
from lokid.settings import Settings
from support import Lokid, ping_as, wait_until


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_socket_is_0600_in_a_0700_folder(lokid):
    assert stat.S_ISSOCK(os.lstat(lokid.socket).st_mode)
    assert mode(lokid.socket) == 0o600
    assert mode(lokid.socket.parent) == 0o700


def test_an_open_folder_is_refused(tmp_short):
    (tmp_short / "run").mkdir(mode=0o755)
    os.chmod(tmp_short / "run", 0o755)
    daemon = Lokid(tmp_short).start(wait=False)
    assert daemon.proc.wait(10) == 1
    assert "must be 0700" in daemon.log()


def test_a_symlinked_folder_is_refused(tmp_short):
    real = tmp_short / "real"
    real.mkdir(mode=0o700)
    (tmp_short / "run").symlink_to(real)
    daemon = Lokid(tmp_short).start(wait=False)
    assert daemon.proc.wait(10) == 1
    assert "is a symlink" in daemon.log()


def test_a_folder_owned_by_another_user_is_refused(tmp_short):
    (tmp_short / "run").mkdir(mode=0o700)
    os.chown(tmp_short / "run", 65534, 65534)
    daemon = Lokid(tmp_short).start(wait=False)
    assert daemon.proc.wait(10) == 1
    assert "owned by uid 65534" in daemon.log()


def test_a_socket_path_longer_than_sun_path_is_refused_clearly(tmp_short):
    long_path = tmp_short / ("d" * 120) / "lokid.sock"
    proc = subprocess.run(
        [sys.executable, "-m", "lokid", "serve", "--socket", str(long_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "sun_path" in proc.stderr


def test_a_second_instance_on_the_same_socket_exits_with_a_message(lokid):
    second = Lokid(lokid.root).start(wait=False)
    assert second.proc.wait(10) == 1
    assert "already serving" in second.log()
    assert lokid.call("ping")


def test_a_stale_socket_is_replaced(tmp_short):
    run = tmp_short / "run"
    run.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(run / "lokid.sock"))
    stale.close()  # the file stays; connecting to it is refused
    daemon = Lokid(tmp_short).start()
    try:
        assert daemon.call("ping")
        assert "replacing stale socket" in daemon.log()
    finally:
        daemon.kill()


def test_a_regular_file_at_the_socket_path_is_not_clobbered(tmp_short):
    run = tmp_short / "run"
    run.mkdir(mode=0o700)
    (run / "lokid.sock").write_text("precious")
    daemon = Lokid(tmp_short).start(wait=False)
    assert daemon.proc.wait(10) == 1
    assert (run / "lokid.sock").read_text() == "precious"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_finishes_in_flight_work_and_removes_the_socket(lokid, signum):
    with lokid.client() as c:
        msgid = c.send("debug.sleep", {"seconds": 0.5})
        c.call("ping")  # read after the sleep, on the same connection: the sleep is in flight
        lokid.signal(signum)
        assert c.result(msgid)["slept"] >= 0.5
    assert lokid.proc.wait(20) == 0
    assert not lokid.socket.exists()


def test_work_longer_than_the_grace_is_cancelled_on_stop(tmp_short):
    daemon = Lokid(tmp_short, "--shutdown-grace", "0.2").start()
    with daemon.client() as c:
        msgid = c.send("debug.sleep", {"seconds": 60})
        c.call("ping")
        daemon.signal(signal.SIGTERM)
        with pytest.raises(DaemonError) as info:
            c.result(msgid)
        assert info.value.code == "cancelled"
    assert daemon.proc.wait(20) == 0


def test_another_uid_is_refused(lokid):
    # Open every folder on the way and the socket to everyone, so only the peer check stands.
    for folder in (lokid.root, lokid.socket.parent):
        os.chmod(folder, 0o755)
    os.chmod(lokid.socket, 0o666)
    assert ping_as(65534, lokid.socket) == "closed"
    wait_until(lambda: "refused a connection from uid 65534" in lokid.log(), what="the log line")
    assert lokid.call("ping")


def test_internal_errors_carry_an_id_and_no_traceback(tmp_short, caplog):
    router = Router()

    @router.method("test.boom")
    def boom(call, params):
        raise RuntimeError("a detail the client must not see")

    @router.method("test.conflict")
    def conflict(call, params):
        raise Conflict("not now")

    path = tmp_short / "run" / "s.sock"
    settings = Settings(socket=path, state_dir=tmp_short / "state")
    app = build_app(settings, containers=False)
    daemon = build_daemon(app, router)
    results = {}

    def client_side():
        with Client.connect(path) as c:
            for method in ("test.boom", "test.conflict"):
                try:
                    c.call(method)
                except DaemonError as exc:
                    results[method] = exc
        trio.from_thread.run_sync(app.lifecycle.request_shutdown, "test done")

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: daemon.serve(
                    Listener.bind(path), handle_signals=False, task_status=task_status
                )
            )
            await trio.to_thread.run_sync(client_side)

    with caplog.at_level(logging.ERROR, logger="lokid"):
        trio.run(main)
    internal = results["test.boom"]
    assert internal.code == "internal"
    assert "detail" not in internal.message and "Traceback" not in internal.message
    error_id = internal.message.split("id ")[1].split(")")[0]
    assert any(error_id in r.getMessage() for r in caplog.records)
    assert results["test.conflict"].code == "conflict"
