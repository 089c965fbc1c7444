"""The queue through lokid beside the shell claim of Loki Mode's reference.

Prints, from one run:
- claim+complete cycles/s through lokid with 10,000 pending tasks, beside
  `jq-claim.sh` (one claim per process) on a pending.json of 10,000 tasks;
- lokid's claim latency at 1,000 and at 100,000 pending tasks (alternating);
- a claim+complete cycle beside lokid's own ping: as two requests (claim, then
  complete) and as one (complete with claimNext, the next claim in the same
  transaction);
- that claimNext cycle in-process, without a socket, and the same with each cycle
  after a round trip to another process (the floor under the socket figures);
- pipelined enqueue_many, tasks/s.

usage: python bench/bench_queue.py [--shell-claims 10] [--big 100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from _common import ROOT, LokidProcess, connect, frame, pct, read_frame, round_trips

BASELINES = ROOT.parent / "shared" / "baselines"
decode = msgspec.msgpack.decode


def rpc(sock, msgid: int, method: str, params: dict):
    sock.sendall(frame([0, msgid, method, params]))
    reply = decode(read_frame(sock))
    if reply[2] is not None:
        raise RuntimeError(f"{method}: {reply[2]}")
    return reply[3]


def fill_types(sock, project: str, types: list[str], per_type: int) -> None:
    tasks = [
        {
            "type": t,
            "priority": 1 + i % 10,
            "payload": {"action": "implement", "target": f"{t}/{i}"},
        }
        for i in range(per_type)
        for t in types
    ]
    for start in range(0, len(tasks), 5000):
        rpc(
            sock,
            1,
            "queue.enqueue_many",
            {"project": project, "tasks": tasks[start : start + 5000]},
        )


def fill(sock, project: str, n: int, tag: str) -> float:
    """Enqueue `n` tasks in pipelined batches; returns tasks per second.

    A writer thread sends while this thread reads the replies: a pipelining
    client that stops reading is slowed by lokid, by design.
    """
    batch = 5000
    frames = []
    for sent in range(0, n, batch):
        params = {"project": project, "tasks": _tasks(sent, min(batch, n - sent), tag)}
        frames.append(frame([0, len(frames) + 1, "queue.enqueue_many", params]))
    start = time.perf_counter()
    writer = threading.Thread(target=lambda: [sock.sendall(f) for f in frames])
    writer.start()
    for _ in frames:
        reply = decode(read_frame(sock))
        assert reply[2] is None, reply[2]
    writer.join()
    return n / (time.perf_counter() - start)


CAPS = ["eng-backend", "eng-frontend", "ops-devops", "eng-qa"]
REPORT = {"decisionReport": {"why": "bench"}}


def _tasks(first: int, n: int, tag: str) -> list[dict]:
    """Tasks of four types and ten priorities, as every queue figure here uses."""
    return [
        {
            "type": CAPS[i % 4],
            "priority": 1 + (i * 7) % 10,
            "payload": {"action": "implement", "target": f"src/{tag}_{i}.py", "goal": "ok"},
        }
        for i in range(first, first + n)
    ]


def cycles(sock, project: str, n: int, caps: list[str] = CAPS) -> tuple[list[float], list[float]]:
    """`n` claim+complete cycles; returns (claim latencies, cycle latencies) in us."""
    claim_us, cycle_us = [], []
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        task = rpc(
            sock, 1, "queue.claim", {"project": project, "agent": "b", "capabilities": caps}
        )["task"]
        mid = clock()
        rpc(
            sock,
            2,
            "queue.complete",
            {"project": project, "id": task["id"], "agent": "b", "result": REPORT},
        )
        end = clock()
        claim_us.append((mid - start) / 1000)
        cycle_us.append((end - start) / 1000)
    return claim_us, cycle_us


def fused_cycles(sock, project: str, n: int, caps: list[str] = CAPS) -> list[float]:
    """`n` worker cycles of one request each: complete with claimNext; latencies in us."""
    out = []
    clock = time.perf_counter_ns
    claim = {"project": project, "agent": "b", "capabilities": caps}
    task = rpc(sock, 1, "queue.claim", claim)["task"]
    done = {"project": project, "agent": "b", "result": REPORT}
    then = {"capabilities": caps}
    for _ in range(n):
        start = clock()
        reply = rpc(sock, 2, "queue.complete", done | {"id": task["id"], "claimNext": then})
        out.append((clock() - start) / 1000)
        task = reply["next"]["task"]
    rpc(sock, 2, "queue.complete", done | {"id": task["id"]})
    return out


def in_process_cycles(
    n_tasks: int, n: int, between: Callable[[], object] | None = None
) -> list[float]:
    """The queue's own work for one claimNext cycle, no socket: `Queue.complete` with a
    next claim, called directly on a store of `n_tasks` pending (the floor under the
    socket figures above). `between` runs before each cycle, untimed."""
    from lokid.queue.breaker_config import BreakerConfigs
    from lokid.queue.core import Claim, Queue
    from lokid.store.sqlite import SqliteStore

    work = Path(tempfile.mkdtemp(prefix="lkq-bare-"))
    try:
        queue = Queue("/bench", SqliteStore(work / "lokid.db"), BreakerConfigs(), _ignore, _ignore)
        for start in range(0, n_tasks, 5000):
            queue.enqueue_many(_tasks(start, min(5000, n_tasks - start), "bare"))
        then = Claim("b", CAPS)
        task = queue.claim("b", CAPS, None).task
        out, clock = [], time.perf_counter_ns
        for _ in range(n):
            if between is not None:
                between()
            start = clock()
            task = queue.complete(task.id, "b", REPORT, then).next.task
            out.append((clock() - start) / 1000)
        queue.store.close()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ignore(*args: object) -> None:
    pass


def after_round_trips(n_tasks: int, n: int) -> list[float]:
    """`in_process_cycles`, each cycle right after a one-byte round trip to another
    process: the thread blocks and wakes as a daemon's does between requests, and on
    this kind of machine (a VM) the same code then runs measurably slower."""
    here, there = socket.socketpair()
    echo = subprocess.Popen(
        [sys.executable, "-c", _ECHO, str(there.fileno())], pass_fds=[there.fileno()]
    )
    there.close()

    def round_trip() -> None:
        here.send(b"x")
        here.recv(1)

    try:
        return in_process_cycles(n_tasks, n, round_trip)
    finally:
        here.close()
        echo.wait(10)


_ECHO = """
import socket, sys
s = socket.socket(fileno=int(sys.argv[1]))
while data := s.recv(1):
    s.send(data)
"""


def shell_claims(n_tasks: int, claims: int) -> float:
    """Claims per second of the reference's shell claim on a pending.json of n_tasks."""
    work = Path(tempfile.mkdtemp(prefix="lkq-shell-"))
    try:
        loki = work / ".loki"
        subprocess.run(
            [sys.executable, str(BASELINES / "make-pending.py"), str(n_tasks), str(loki)],
            check=True,
        )
        env = {**os.environ, "LOKI_DIR": str(loki)}
        start = time.perf_counter()
        for i in range(claims):
            subprocess.run(
                ["bash", str(BASELINES / "jq-claim.sh"), f"agent-{i}"],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        return claims / (time.perf_counter() - start)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shell-claims", type=int, default=10)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--cycles", type=int, default=2000)
    args = parser.parse_args()
    have_shell = (
        (BASELINES / "jq-claim.sh").exists() and shutil.which("jq") and shutil.which("flock")
    )

    root = Path(tempfile.mkdtemp(prefix="lkq-"))
    projects = {name: root / name for name in ("ten", "small", "big")}
    for path in projects.values():
        path.mkdir()
    with LokidProcess() as lokid:
        sock = connect(lokid.socket)
        enqueue_rate = fill(sock, str(projects["ten"]), 10_000, "ten")
        fill(sock, str(projects["small"]), args.small, "s")
        fill(sock, str(projects["big"]), args.big, "b")
        time.sleep(2)  # let the first view writes of the big queue pass
        ping = frame([0, 1, "ping", {}])
        round_trips(sock, ping, 2000)
        # claim+complete at 10,000 pending (two requests, then one), beside ping, alternating
        ten_cycle, fused, ping_us = [], [], []
        for _ in range(5):
            ten_cycle += cycles(sock, str(projects["ten"]), args.cycles // 5)[1]
            fused += fused_cycles(sock, str(projects["ten"]), args.cycles // 5)
            ping_us += round_trips(sock, ping, args.cycles // 5)
        # claim latency at 1,000 and at 100,000, alternating rounds
        small_claim, big_claim = [], []
        for _ in range(5):
            small_claim += cycles(sock, str(projects["small"]), 60)[0]
            big_claim += cycles(sock, str(projects["big"]), 60)[0]
        sock.close()
    shutil.rmtree(root, ignore_errors=True)

    lokid_cycles = 1e6 / statistics.mean(ten_cycle)
    print("queue benchmark (one lokid, one blocking client over AF_UNIX)")
    print(f"  pipelined enqueue_many: {enqueue_rate:,.0f} tasks/s")
    print(
        f"  claim+complete at 10,000 pending: {lokid_cycles:,.0f} cycles/s "
        f"(p50 {pct(ten_cycle, 50):.1f} us, p99 {pct(ten_cycle, 99):.1f} us)"
    )
    if have_shell:
        shell = shell_claims(10_000, args.shell_claims)
        print(f"  shell jq-claim.sh at 10,000 tasks: {shell:.2f} claims/s", end="")
        print(f" ({args.shell_claims} claims, one process each)")
        print(f"  ratio lokid/shell: {lokid_cycles / shell:,.0f}x  (target >= 1000x)")
    else:
        print("  shell baseline skipped: ../shared/baselines, jq or flock missing")
    ratio = pct(big_claim, 50) / pct(small_claim, 50)
    for size, lat in ((args.small, small_claim), (args.big, big_claim)):
        print(f"  claim latency at {size:,}: p50 {pct(lat, 50):.1f} us  p99 {pct(lat, 99):.1f} us")
    print(f"  ratio {args.big:,}/{args.small:,} p50: {ratio:.2f}x  (target <= 1.5x)")
    ping_p50 = pct(ping_us, 50)
    print(f"  ping p50 {ping_p50:.1f} us")
    for name, lat in (("two requests", ten_cycle), ("one request, claimNext", fused)):
        print(
            f"  claim+complete as {name}: p50 {pct(lat, 50):.1f} us = "
            f"{pct(lat, 50) / ping_p50:.2f}x ping  (target <= 3x)"
        )
    bare = pct(in_process_cycles(10_000, args.cycles), 50)
    print(
        f"  the same claimNext cycle in-process, no socket (Queue + SQLite only): "
        f"p50 {bare:.1f} us = {bare / ping_p50:.2f}x that ping"
    )
    woken = pct(after_round_trips(10_000, args.cycles), 50)
    print(
        f"  the same, each cycle after a round trip to another process (untimed): "
        f"p50 {woken:.1f} us = {woken / ping_p50:.2f}x that ping"
    )


if __name__ == "__main__":
    main()
