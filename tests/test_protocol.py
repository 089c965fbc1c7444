"""Wire protocol v1 against a real daemon over a real socket."""

import os
import socket
import struct
import time

import msgspec
import pytest

import lokid as lokid_package
from lokictl import Client, DaemonError, ProtocolError
from support import wait_until


def raw_connect(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(path))
    return sock


def send_frame(sock: socket.socket, body: bytes) -> None:
    sock.sendall(struct.pack(">I", len(body)) + body)


def read_frame(sock: socket.socket):
    header = recv_exact(sock, 4)
    if header is None:
        return None
    (length,) = struct.unpack(">I", header)
    return msgspec.msgpack.decode(recv_exact(sock, length))


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def test_hello_reports_server_version_and_protocol(lokid):
    """The version is the package's own."""
    with lokid.client() as c:
        reply = c.call("hello", {"client": "pytest", "protocol": 1})
    assert reply["server"] == "lokid"
    assert reply["version"] == lokid_package.__version__
    assert reply["protocol"] == 1
    assert reply["pid"] == lokid.proc.pid
    assert {"ping", "daemon.status", "subscribe", "unsubscribe"} <= set(reply["capabilities"])


def test_hello_with_another_protocol_version_is_invalid_params(lokid):
    with lokid.client() as c, pytest.raises(DaemonError) as info:
        c.call("hello", {"client": "pytest", "protocol": 2})
    assert info.value.code == "invalid_params"
    assert info.value.data == {"protocol": 1}


def test_ping_and_status(lokid):
    with lokid.client() as c:
        assert c.call("ping")["time"].endswith("Z")
        # The fixture's readiness probe may still be closing; ours is the one left.
        status = wait_until(
            lambda: (s := c.call("daemon.status"))["connections"] == 1 and s, what="one client"
        )
    assert status["pid"] == lokid.proc.pid
    assert status["uptime_s"] >= 0


def test_concurrent_requests_are_answered_out_of_order(lokid):
    sock = raw_connect(lokid.socket)
    send_frame(sock, msgspec.msgpack.encode([0, 1, "debug.sleep", {"seconds": 1.0}]))
    send_frame(sock, msgspec.msgpack.encode([0, 2, "debug.sleep", {"seconds": 0.0}]))
    send_frame(sock, msgspec.msgpack.encode([0, 3, "ping", {}]))
    order = [read_frame(sock)[1] for _ in range(3)]
    assert sorted(order) == [1, 2, 3]
    assert order[-1] == 1, f"the slow request should be answered last, got {order}"


def test_cancel_answers_cancelled(lokid):
    with lokid.client() as c:
        msgid = c.send("debug.sleep", {"seconds": 30})
        started = time.monotonic()
        c.cancel(msgid)
        with pytest.raises(DaemonError) as info:
            c.result(msgid)
        assert info.value.code == "cancelled"
        assert time.monotonic() - started < 10
        assert c.call("ping")  # the connection carries on


def test_error_codes(lokid):
    with lokid.client() as c:
        cases = {
            "method_not_found": ("no.such.method", {}),
            "invalid_params": ("debug.sleep", {"seconds": "long"}),
            "not_found": ("unsubscribe", {"sub": 999}),
        }
        for code, (method, params) in cases.items():
            with pytest.raises(DaemonError) as info:
                c.call(method, params)
            assert info.value.code == code, method
        with pytest.raises(DaemonError) as info:
            c.call("debug.sleep", {"seconds": -1})
        assert info.value.code == "invalid_params"


def test_params_that_are_not_a_map_are_invalid_params(lokid):
    sock = raw_connect(lokid.socket)
    send_frame(sock, msgspec.msgpack.encode([0, 5, "ping", [1, 2]]))
    reply = read_frame(sock)
    assert reply[1] == 5 and reply[2]["code"] == "invalid_params"


def test_garbage_in_a_frame_is_parse_error_and_the_connection_carries_on(lokid):
    sock = raw_connect(lokid.socket)
    send_frame(sock, b"\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
    reply = read_frame(sock)
    assert reply[0] == 1 and reply[1] is None and reply[2]["code"] == "parse_error"
    send_frame(sock, msgspec.msgpack.encode([0, 9, "ping", {}]))
    assert read_frame(sock)[1] == 9


def test_a_wrong_envelope_is_invalid_request_with_its_msgid(lokid):
    sock = raw_connect(lokid.socket)
    send_frame(sock, msgspec.msgpack.encode([0, 3, 42, {}]))  # method must be a string
    reply = read_frame(sock)
    assert reply[1] == 3 and reply[2]["code"] == "invalid_request"
    send_frame(sock, msgspec.msgpack.encode([1, 4, None, None]))  # a response is not a request
    assert read_frame(sock)[2]["code"] == "invalid_request"


def test_a_msgid_already_in_flight_is_invalid_request(lokid):
    sock = raw_connect(lokid.socket)
    send_frame(sock, msgspec.msgpack.encode([0, 1, "debug.sleep", {"seconds": 5}]))
    send_frame(sock, msgspec.msgpack.encode([0, 1, "ping", {}]))
    reply = read_frame(sock)
    assert reply[1] == 1 and reply[2]["code"] == "invalid_request"
    send_frame(sock, msgspec.msgpack.encode([2, "$/cancel", {"id": 1}]))
    assert read_frame(sock)[2]["code"] == "cancelled"


def test_random_garbage_bytes_close_only_that_connection(lokid):
    other = lokid.client()
    sock = raw_connect(lokid.socket)
    sock.sendall(os.urandom(4096) + b"GET / HTTP/1.1\r\n\r\n")
    # Either the length prefix is too large (too_large, then closed) or the bodies are junk.
    sock.settimeout(10)
    try:
        while sock.recv(65536):
            pass
    except (TimeoutError, ConnectionResetError):
        pass
    assert other.call("ping")
    other.close()


def test_oversized_length_gets_too_large_then_close(tmp_short):
    from support import Lokid

    daemon = Lokid(tmp_short, "--max-frame", "1024").start()
    try:
        sock = raw_connect(daemon.socket)
        sock.sendall(struct.pack(">I", 1025))
        reply = read_frame(sock)
        assert reply[1] is None and reply[2]["code"] == "too_large"
        assert reply[2]["data"] == {"limit": 1024}
        assert read_frame(sock) is None  # closed
        assert daemon.call("ping")  # the daemon carries on
    finally:
        daemon.kill()


def test_a_request_before_an_oversized_length_is_still_answered(tmp_short):
    from support import Lokid

    daemon = Lokid(tmp_short, "--max-frame", "1024").start()
    try:
        sock = raw_connect(daemon.socket)
        body = msgspec.msgpack.encode([0, 7, "ping", {}])
        sock.sendall(struct.pack(">I", len(body)) + body + struct.pack(">I", 5000))
        replies = [read_frame(sock), read_frame(sock)]
        assert replies[0][1] == 7 and replies[0][2] is None
        assert replies[1][1] is None and replies[1][2]["code"] == "too_large"
        assert read_frame(sock) is None
    finally:
        daemon.kill()


def test_a_truncated_frame_is_discarded_and_logged(lokid):
    sock = raw_connect(lokid.socket)
    sock.sendall(struct.pack(">I", 100) + b"\x93" * 10)
    sock.close()
    # The connection is gone once only the asking one is left (the log says why at close).
    wait_until(lambda: lokid.call("daemon.status")["connections"] == 1, what="the close")
    assert "closed inside a frame (14 bytes discarded)" in lokid.log()
    assert lokid.call("ping")


def test_a_client_that_never_reads_does_not_block_others(lokid):
    hog = raw_connect(lokid.socket)
    hog.setblocking(False)
    request = _frame([0, 1, "daemon.status", {}])
    sent = 0
    deadline = time.monotonic() + 30
    blocked = False
    while time.monotonic() < deadline:
        try:
            sent += hog.send(request * 256)
        except BlockingIOError:
            # The daemon stopped reading us: backpressure reached the hog itself.
            blocked = True
            break
    assert blocked, "the daemon kept reading a client that never reads"
    with lokid.client() as c:  # answered, though the hog's replies are stuck
        for _ in range(100):
            c.call("ping")
    status = lokid.call("daemon.status")
    assert status["connections"] >= 2
    hog.close()


def _frame(obj) -> bytes:
    body = msgspec.msgpack.encode(obj)
    return struct.pack(">I", len(body)) + body


def test_events_reach_a_subscriber(lokid):
    import signal

    with lokid.client() as c:
        sub = c.call("subscribe", {"topics": ["config.*"]})["sub"]
        lokid.signal(signal.SIGHUP)
        event = c.next_event(timeout=10)
    assert event["sub"] == sub and event["seq"] == 1
    assert event["topic"] == "config.reloaded"
    assert event["project"] is None and event["time"].endswith("Z")


def test_client_disconnect_mid_request_leaves_the_daemon_serving(lokid):
    c = lokid.client()
    c.send("debug.sleep", {"seconds": 30})
    c.close()
    wait_until(lambda: lokid.call("daemon.status")["connections"] == 1, what="the drop")


def test_closed_connection_reports_protocol_error(lokid):
    c = lokid.client()
    lokid.call("daemon.shutdown")
    assert lokid.proc.wait(10) == 0
    with pytest.raises((ProtocolError, ConnectionError)):
        c.call("ping")


def test_unknown_notifications_are_ignored(lokid):
    with lokid.client() as c:
        c.notify("$/something", {})
        c.notify("$/cancel", {"id": "not-a-number"})
        assert c.call("ping")


def test_client_library_is_reusable_as_a_context_manager(lokid):
    with Client.connect(lokid.socket) as c:
        assert c.call("ping")


def test_lokictl_stays_thin(tmp_short):
    """lokictl runs on the standard library and msgspec: no trio, docker or watchfiles."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from lokictl.cli import main\n"
        "main(['--no-spawn', '--socket', sys.argv[1], 'status'])\n"
        "heavy = sorted(m for m in ('trio', 'docker', 'watchfiles', 'anyio') if m in sys.modules)\n"
        "print(','.join(heavy) or 'none')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_short / "absent.sock")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout.strip() == "none", done


def test_daemon_info_says_where_lokid_keeps_things_and_what_is_wrong(lokid, tmp_short):
    fine, bare, gone = tmp_short / "fine", tmp_short / "bare", tmp_short / "gone"
    (fine / ".loki").mkdir(parents=True)
    bare.mkdir()
    gone.mkdir()
    for path in (fine, bare, gone):
        lokid.call("project.add", {"path": str(path)})
    gone.rmdir()
    info = lokid.call("daemon.info")
    assert info["pid"] == lokid.proc.pid and info["socket"] == str(lokid.socket)
    assert info["logFile"] == str(lokid.log_path), "its stderr is that file"
    problems = {p["path"]: (p["hasLoki"], p["missing"], p["problem"]) for p in info["projects"]}
    assert problems[str(fine)] == (True, False, None)
    assert problems[str(bare)][:2] == (False, False) and "no .loki/" in problems[str(bare)][2]
    assert problems[str(gone)] == (False, True, "the folder is gone")
    assert not (bare / ".loki").exists(), "asking creates nothing"
