"""Bounded time and memory per client, against a real daemon (issue 15, items 7, 8, 9, 11),
and group commit seen from the socket (issue 17).

Raw frames where the point is pipelining or not reading; `lokictl.Client` elsewhere.
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lokictl import Client, DaemonError, ProtocolError
from support import Lokid, wait_until

HEADER = struct.Struct(">I")


def frame(msgid: int, method: str, params: Any) -> bytes:
    body = msgspec.msgpack.encode([0, msgid, method, params])
    return HEADER.pack(len(body)) + body


def read_reply(sock: socket.socket) -> list[Any]:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("lokid closed the connection")
            buf += chunk
        return buf

    return msgspec.msgpack.decode(exact(HEADER.unpack(exact(4))[0]))


def connect(lokid: Lokid) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(lokid.socket))
    return sock


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def flood_without_reading(sock: socket.socket, request: bytes, seconds: float = 60) -> int:
    """Send `request` over and over without reading, until lokid stops taking our bytes
    (its outbox for us is full and its reader waits for room); returns how many went."""
    sock.setblocking(False)
    burst = request * 512
    sent = 0
    stalled_since = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sent += sock.send(burst)
            stalled_since = None
        except BlockingIOError:
            now = time.monotonic()
            stalled_since = stalled_since or now
            if now - stalled_since > 1.0:  # a second without lokid reading a byte
                return sent // len(request)
            time.sleep(0.01)
    raise AssertionError("lokid kept reading a client that never reads its replies")


# -- item 7: graceful stop whatever the clients do -------------------------------------------


def test_sigterm_with_a_client_that_never_reads_exits_0(tmp_short: Path) -> None:
    lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "info"}).start()
    try:
        hog = connect(lokid)
        flood_without_reading(hog, frame(1, "ping", {}))
        lokid.signal(signal.SIGTERM)
        assert lokid.proc is not None
        code = lokid.proc.wait(30)
        assert code == 0, lokid.log()[-3000:]
        hog.close()
    finally:
        lokid.kill()


# -- item 8: a hostile subscribe --------------------------------------------------------------


def test_a_subscribe_with_200k_patterns_is_refused_at_once_and_freezes_nobody(
    tmp_short: Path,
) -> None:
    lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "info"}).start()
    try:
        hostile = connect(lokid)
        patterns = [f"queue.x{i}.*" for i in range(200_000)]
        hostile.sendall(frame(1, "subscribe", {"topics": patterns}))
        with Client.connect(lokid.socket, timeout=10) as other:
            start = time.monotonic()
            other.call("ping")
            assert time.monotonic() - start < 2.0
        reply = read_reply(hostile)
        assert reply[2] is not None and reply[2]["code"] == "invalid_params", reply[2]
        assert "at most 64" in reply[2]["message"]
        hostile.close()
    finally:
        lokid.kill()


def test_one_client_cannot_pile_up_subscriptions_and_events_still_flow(
    lokid: Lokid, project: Path
) -> None:
    with Client.connect(lokid.socket, timeout=10) as c:
        for i in range(64):
            c.call("subscribe", {"topics": [f"nothing.{i}", "queue.enqueued"]})
        with pytest.raises(DaemonError) as err:
            c.call("subscribe", {"topics": ["queue.*"]})
        assert err.value.code == "invalid_params" and "64 subscriptions" in str(err.value)
        with pytest.raises(DaemonError) as err:
            c.call("subscribe", {"topics": ["x" * 201]})
        assert err.value.code == "invalid_params"
        lokid.call("queue.enqueue", {"project": str(project), "task": {"type": "eng"}})
        seen = {c.next_event(timeout=10)["sub"] for _ in range(64)}
        assert len(seen) == 64  # each of its subscriptions got the event


# -- item 9: a big enqueue_many does not stop everyone else -----------------------------------


def test_enqueue_many_of_100k_keeps_other_clients_served(tmp_short: Path, project: Path) -> None:
    lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "info"}).start()
    other = tmp_short / "other"
    (other / ".loki").mkdir(parents=True)
    try:
        lokid.call("queue.enqueue", {"project": str(other), "task": {"type": "eng"}})
        tasks = [{"type": "bulk", "payload": {"i": i}} for i in range(100_000)]
        done: dict[str, Any] = {}

        def bulk() -> None:
            with Client.connect(lokid.socket, timeout=120) as c:
                done["result"] = c.call(
                    "queue.enqueue_many", {"project": str(project)} | {"tasks": tasks}
                )

        thread = threading.Thread(target=bulk)
        gaps: list[float] = []
        same_project: dict[str, Any] = {}
        with Client.connect(lokid.socket, timeout=120) as c:
            thread.start()
            wait_until(lambda: thread.is_alive(), 5, "the bulk client")
            time.sleep(0.3)  # the batch is on its way in (its frame is ~2.5 MB)

            # a request for the busy project is answered once the batch committed
            def busy_project() -> None:
                with Client.connect(lokid.socket, timeout=120) as c2:
                    same_project["stats"] = c2.call("queue.stats", {"project": str(project)})

            waiter = threading.Thread(target=busy_project)
            waiter.start()
            while thread.is_alive():
                start = time.monotonic()
                c.call("queue.stats", {"project": str(other)})
                gaps.append(time.monotonic() - start)
            thread.join()
            waiter.join(60)
        assert len(done["result"]["results"]) == 100_000
        assert same_project["stats"]["states"]["pending"] in (0, 100_000)  # never half
        assert len(gaps) > 5, "the bulk was over before it could be watched"
        print(f"max wait {max(gaps) * 1000:.0f} ms over {len(gaps)} requests")
        assert max(gaps) < 1.0, f"another project's request waited {max(gaps):.2f} s"
    finally:
        lokid.kill()


def test_a_lone_request_for_a_project_inside_a_bulk_enqueue_waits_for_its_commit(
    lokid: Lokid, project: Path
) -> None:
    p = {"project": str(project)}
    tasks = [{"type": "bulk", "payload": {"i": i}} for i in range(100_000)]
    done: dict[str, Any] = {}

    def bulk() -> None:
        with Client.connect(lokid.socket, timeout=120) as c:
            done["n"] = len(c.call("queue.enqueue_many", p | {"tasks": tasks})["results"])

    thread = threading.Thread(target=bulk)
    seen = []
    with Client.connect(lokid.socket, timeout=120) as c:
        thread.start()
        while thread.is_alive():  # the only client sending while the bulk runs
            seen.append(c.call("queue.stats", p)["states"]["pending"])
            time.sleep(0.01)
    thread.join(120)
    assert done["n"] == 100_000
    assert set(seen) <= {0, 100_000}  # before the batch or after its commit, never half


def test_enqueue_many_stays_all_or_nothing_and_a_huge_task_is_refused(
    lokid: Lokid, project: Path
) -> None:
    p = {"project": str(project)}
    tasks: list[dict[str, Any]] = [{"type": "bulk", "payload": {"i": i}} for i in range(5000)]
    tasks.append({"type": "bulk", "dependencies": ["nowhere"]})
    with pytest.raises(DaemonError) as err:
        lokid.call("queue.enqueue_many", p | {"tasks": tasks})
    assert err.value.code == "invalid_params" and "tasks[5000]" in str(err.value)
    assert lokid.call("queue.stats", p)["states"]["pending"] == 0
    big = {"type": "bulk", "payload": {"blob": "x" * (2 * 1024 * 1024)}}
    with pytest.raises(DaemonError) as err:
        lokid.call("queue.enqueue", p | {"task": big})
    assert err.value.code == "too_large" and "at most" in str(err.value)
    assert lokid.call("queue.stats", p)["states"]["pending"] == 0


# -- item 11: what a client that does not read costs ------------------------------------------


def test_a_client_that_never_reads_its_replies_costs_about_its_limit(tmp_short: Path) -> None:
    limit = 4 * 1024 * 1024
    lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "info"}).start()
    try:
        assert lokid.proc is not None
        lokid.call("ping")
        before = rss_kib(lokid.proc.pid)
        hog = connect(lokid)
        flood_without_reading(hog, frame(1, "ping", {}))
        grown = (rss_kib(lokid.proc.pid) - before) * 1024
        assert grown < 2.5 * limit, f"one non-reading client cost {grown / 2**20:.1f} MiB"
        assert lokid.call("ping")  # everyone else is served
        hog.close()
    finally:
        lokid.kill()


def test_past_the_daemon_wide_cap_the_slowest_clients_are_disconnected(tmp_short: Path) -> None:
    env = {"LOKID_OUTBOX_LIMIT": "4MiB", "LOKID_OUTBOX_TOTAL": "6MiB", "LOKID_LOG_LEVEL": "info"}
    lokid = Lokid(tmp_short, env=env).start()
    try:
        assert lokid.proc is not None
        hogs = [connect(lokid) for _ in range(4)]
        for hog in hogs:
            flood_without_reading(hog, frame(1, "ping", {}), seconds=30)
        alive = 0
        for hog in hogs:  # drain each: a cut-off one ends (EOF or reset), others do not
            hog.setblocking(True)
            hog.settimeout(2)
            try:
                while hog.recv(1 << 20):
                    pass
            except TimeoutError:
                alive += 1
            except ConnectionError:
                pass
        assert alive < len(hogs), "no client was disconnected past the daemon-wide cap"
        assert rss_kib(lokid.proc.pid) < 200 * 1024
        assert lokid.call("ping")
        for hog in hogs:
            hog.close()
    finally:
        lokid.kill()


# -- issue 17: one failing operation in a batch ----------------------------------------------


def test_a_failing_operation_in_a_batch_does_not_fail_its_neighbours(
    lokid: Lokid, project: Path
) -> None:
    """Requests sent in one write are read together and run as one batch."""
    p = {"project": str(project)}
    lokid.call("queue.enqueue", p | {"task": {"id": "held", "type": "eng"}})
    with Client.connect(lokid.socket, timeout=10) as c:
        c.call("queue.claim", p | {"agent": "a", "capabilities": ["eng"]})
    sock = connect(lokid)
    report = {"decisionReport": {"why": "ok"}}
    burst = b"".join(
        [
            frame(
                1, "queue.enqueue", p | {"task": {"id": "t1", "type": "eng", "payload": {"n": 1}}}
            ),
            frame(2, "queue.complete", p | {"id": "nope", "agent": "a", "result": report}),
            frame(3, "queue.complete", p | {"id": "held", "agent": "a", "result": report}),
            frame(4, "queue.complete", p | {"id": "held", "agent": "a", "result": report}),
            frame(
                5, "queue.enqueue", p | {"task": {"id": "t2", "type": "eng", "payload": {"n": 2}}}
            ),
        ]
    )
    sock.sendall(burst)
    replies = {r[1]: r for r in (read_reply(sock) for _ in range(5))}
    sock.close()
    assert replies[1][2] is None and replies[1][3]["id"] == "t1"
    assert replies[2][2]["code"] == "not_found"
    assert replies[3][2] is None and replies[3][3]["state"] == "completed"
    assert replies[4][2]["code"] == "conflict"  # the same task, already completed by 3
    assert replies[5][2] is None and replies[5][3]["id"] == "t2"
    states = {t: lokid.call("queue.get", p | {"id": t})["state"] for t in ("t1", "t2", "held")}
    assert states == {"t1": "pending", "t2": "pending", "held": "completed"}


def test_many_agents_at_full_durability_lose_nothing_acknowledged(
    tmp_short: Path, project: Path
) -> None:
    """Group commit at `full`: every acknowledged completion is there after a SIGKILL."""
    lokid = Lokid(tmp_short, env={"LOKID_DURABILITY": "full", "LOKID_LOG_LEVEL": "info"})
    lokid.start()
    p = {"project": str(project)}
    lokid.call(
        "queue.enqueue_many",
        p | {"tasks": [{"type": "eng", "payload": {"i": i}} for i in range(400)]},
    )
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def agent(n: int) -> None:
        try:
            with Client.connect(lokid.socket, timeout=30) as c:
                task = c.call("queue.claim", p | {"agent": f"a{n}", "capabilities": ["eng"]})[
                    "task"
                ]
                while task is not None and not stop.is_set():
                    reply = c.call(
                        "queue.complete",
                        p
                        | {
                            "id": task["id"],
                            "agent": f"a{n}",
                            "result": {"decisionReport": {"n": n}},
                            "claimNext": {"capabilities": ["eng"]},
                        },
                    )
                    with lock:
                        acked.append(task["id"])
                    task = reply["next"]["task"]
        except (OSError, EOFError, DaemonError, ProtocolError):  # the kill: the point
            pass

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) > 100, 60, "completions")
    assert lokid.proc is not None
    lokid.proc.send_signal(signal.SIGKILL)
    lokid.proc.wait(10)
    stop.set()
    for t in threads:
        t.join(30)
    restarted = Lokid(tmp_short, env={"LOKID_DURABILITY": "full"}).start()
    try:
        with lock:
            done = list(acked)
        for task_id in done:
            state = restarted.call("queue.get", p | {"id": task_id})["state"]
            assert state == "completed", (task_id, state)
    finally:
        restarted.kill()
