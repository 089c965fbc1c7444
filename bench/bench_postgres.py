"""The queue on PostgreSQL beside SQLite, and shared by several lokid instances.

Prints, from one run, in alternating rounds (every configuration measured once per round):
- claim+complete cycles/s and the cycle's p50 (one `queue.complete` with `claimNext`, the
  worker's whole cycle) with 1 and 8 concurrent agents, on SQLite and on PostgreSQL through
  one lokid, and through 2 and 3 lokid instances sharing the queue (agents spread evenly);
- event latency: `queue.complete` sent until a subscriber sees `queue.completed`, on SQLite
  (published locally), on PostgreSQL with the subscriber on the same instance and on another.

PostgreSQL is a private cluster (tests/pgenv.py) on this machine, `fsync=off`: a commit
reaches the OS before it is acknowledged, the promise of lokid's SQLite at its default
durability. Every lokid, agent and the server share this machine's cores.

usage: python bench/bench_postgres.py [--rounds 3] [--seconds 2] [--write]
       (--write puts the figures into BENCHMARKS.md's PostgreSQL section)
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

import msgspec
from _common import ROOT, LokidProcess, connect, frame, pct, read_frame

sys.path.insert(0, str(ROOT / "tests"))
from pgenv import start_cluster

decode = msgspec.msgpack.decode
REPORT = {"decisionReport": {"why": "bench"}}
MARK = "<!-- bench_postgres.py -->"


def rpc(sock, method: str, params: dict):
    sock.sendall(frame([0, 1, method, params]))
    reply = decode(read_frame(sock))
    if reply[2] is not None:
        raise RuntimeError(f"{method}: {reply[2]}")
    return reply[3]


@dataclass
class Config:
    """A queue served by `lokids` (one project checkout on each)."""

    name: str
    lokids: list[LokidProcess]
    projects: list[str]
    cycles_s: dict[int, list[float]] = field(default_factory=dict)
    p50_us: dict[int, list[float]] = field(default_factory=dict)


def checkout(lokid: LokidProcess, queue: str | None) -> str:
    """A project folder of this lokid; `queue` names its queue in the shared database."""
    path = lokid.dir / f"p-{queue or 'local'}"
    (path / ".loki" / "config").mkdir(parents=True)
    if queue is not None:
        (path / ".loki" / "config" / "queue-store.yaml").write_text(f"name: {queue}\n")
    with connect(lokid.socket) as sock:
        rpc(sock, "project.add", {"path": str(path)})
    return str(path)


def top_up(lokid: LokidProcess, project: str, n: int) -> None:
    """At least `n` tasks pending (not timed)."""
    with connect(lokid.socket) as sock:
        pending = rpc(sock, "queue.stats", {"project": project})["states"]["pending"]
        for start in range(pending, n, 5000):
            tasks = [
                {"type": "eng", "payload": {"n": i, "t": time.time_ns()}}
                for i in range(start, min(n, start + 5000))
            ]
            rpc(sock, "queue.enqueue_many", {"project": project, "tasks": tasks})


def measure(config: Config, agents: int, seconds: float) -> None:
    """`agents` threads cycling claimNext for `seconds`; spread over the config's lokids."""
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(agents)]

    def agent(i: int) -> None:
        lokid = config.lokids[i % len(config.lokids)]
        project = config.projects[i % len(config.lokids)]
        params = {"project": project, "agent": f"b{i}"}
        out = latencies[i]
        clock = time.perf_counter_ns
        with connect(lokid.socket) as sock:
            task = rpc(sock, "queue.claim", {**params, "capabilities": ["eng"]})["task"]
            while task is not None and not stop.is_set():
                start = clock()
                reply = rpc(
                    sock,
                    "queue.complete",
                    {**params, "id": task["id"], "result": REPORT,
                     "claimNext": {"capabilities": ["eng"]}},
                )  # fmt: skip
                out.append((clock() - start) / 1000)
                task = reply["next"]["task"]
            if task is not None:
                rpc(sock, "queue.complete", {**params, "id": task["id"], "result": REPORT})

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(agents)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(60)
    elapsed = time.perf_counter() - start
    done = [x for per in latencies for x in per]
    config.cycles_s.setdefault(agents, []).append(len(done) / elapsed)
    config.p50_us.setdefault(agents, []).append(pct(done, 50))


def event_latency(
    actor: LokidProcess, actor_project: str, watcher: LokidProcess, watched: str, n: int
) -> list[float]:
    """ms from sending `queue.complete` through `actor` until `watcher`'s subscriber has
    `queue.completed` for it."""
    out = []
    with connect(watcher.socket) as sub, connect(actor.socket) as sock:
        rpc(sub, "subscribe", {"topics": ["queue.completed"], "project": watched})
        params = {"project": actor_project, "agent": "ev"}
        for _ in range(n):
            task = rpc(sock, "queue.claim", {**params, "capabilities": ["eng"]})["task"]
            start = time.perf_counter()
            sock.sendall(frame([0, 1, "queue.complete", {**params, "id": task["id"],
                                                          "result": REPORT}]))  # fmt: skip
            while True:
                msg = decode(read_frame(sub))
                if msg[0] == 2 and msg[2]["data"]["id"] == task["id"]:
                    break
            out.append((time.perf_counter() - start) * 1000)
            decode(read_frame(sock))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the cluster and lokids
    load_before = os.getloadavg()[0]
    cluster = start_cluster("lkpgb")
    url = cluster.create_db("bench")
    env = {"LOKID_STORE": url}
    sqlite = LokidProcess()
    pg = [LokidProcess(env=env) for _ in range(3)]
    started = time.monotonic()
    try:
        for lokid in (sqlite, *pg):
            lokid.__enter__()
        configs = [Config("SQLite, 1 lokid", [sqlite], [checkout(sqlite, None)])]
        for n in (1, 2, 3):
            name = f"pg{n}"
            configs.append(
                Config(
                    f"PostgreSQL, {n} lokid{'s' if n > 1 else ''}",
                    pg[:n],
                    [checkout(lokid, name) for lokid in pg[:n]],
                )
            )
        for round_ in range(args.rounds):
            for agents in (1, 8):
                for config in configs:
                    # more than the config can cycle through in a measure (its last rate x 2)
                    rate = max([*config.cycles_s.get(agents, [0]), 3000])
                    top_up(config.lokids[0], config.projects[0], int(rate * args.seconds * 2))
                    measure(config, agents, args.seconds)
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
        # events: SQLite local, PostgreSQL same instance, PostgreSQL across instances
        local_sqlite, same, across = [], [], []
        two = configs[2]
        for _ in range(args.rounds):
            top_up(sqlite, configs[0].projects[0], args.events)
            top_up(two.lokids[0], two.projects[0], 2 * args.events)
            local_sqlite += event_latency(sqlite, configs[0].projects[0], sqlite,
                                          configs[0].projects[0], args.events)  # fmt: skip
            same += event_latency(two.lokids[0], two.projects[0], two.lokids[0],
                                  two.projects[0], args.events)  # fmt: skip
            across += event_latency(two.lokids[1], two.projects[1], two.lokids[0],
                                    two.projects[0], args.events)  # fmt: skip
    finally:
        for lokid in (sqlite, *pg):
            if lokid.proc is not None:
                lokid.__exit__()
        cluster.close()
    seconds = time.monotonic() - started
    lines = report(configs, local_sqlite, same, across, args, load_before, seconds)
    print("\n".join(lines))
    if args.write:
        write(lines)


def report(configs, local_sqlite, same, across, args, load_before, seconds) -> list[str]:
    base = configs[0]
    med = statistics.median
    lines = [
        MARK,
        "## The queue on PostgreSQL",
        "",
        f"Generated by `bench/bench_postgres.py --write` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {seconds / 60:.1f} minutes: "
        f"{args.rounds} alternating rounds of {args.seconds:g} s per figure; medians of the "
        f"rounds. Load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on "
        f"{os.cpu_count()} cores shared by the server, every lokid and the agents.",
        "",
        "| queue | agents | cycles/s | vs SQLite | cycle p50 | vs SQLite |",
        "|---|---|---|---|---|---|",
    ]
    for agents in (1, 8):
        for config in configs:
            rate, p50 = med(config.cycles_s[agents]), med(config.p50_us[agents])
            rate0, p500 = med(base.cycles_s[agents]), med(base.p50_us[agents])
            lines.append(
                f"| {config.name} | {agents} | {rate:,.0f} | {rate / rate0:.2f}x | "
                f"{p50:,.0f} µs | {p50 / p500:.2f}x |"
            )
    lines += [
        "",
        "| event latency (`queue.complete` sent → `queue.completed` heard) | p50 | p99 |",
        "|---|---|---|",
        f"| SQLite, published by the same lokid | {pct(local_sqlite, 50):.2f} ms | "
        f"{pct(local_sqlite, 99):.2f} ms |",
        f"| PostgreSQL, subscriber on the same lokid (through NOTIFY) | {pct(same, 50):.2f} ms "
        f"| {pct(same, 99):.2f} ms |",
        f"| PostgreSQL, subscriber on another lokid | {pct(across, 50):.2f} ms | "
        f"{pct(across, 99):.2f} ms |",
        "",
        "- A cycle is one `queue.complete` with `claimNext` (the worker's whole cycle, one round "
        "trip). On PostgreSQL it is one transaction of a few statements (the held task read "
        "`FOR UPDATE`, its breaker, the update, the dependents, the next claim `FOR UPDATE SKIP "
        "LOCKED`, the NOTIFY with the commit).",
        "- One lokid runs one transaction at a time on its event loop (as with SQLite), so on "
        "PostgreSQL its throughput is the inverse of one transaction's latency (a few round "
        "trips to the server) however many agents it serves: 8 agents through one lokid queue "
        "inside it (the p50). A second lokid overlaps its waits with the first's; on this "
        "2-core machine, shared by the server, every lokid and the agents (and other "
        "engineers' runs), a third adds nothing.",
        "",
    ]
    return lines


def write(lines: list[str]) -> None:
    """Replace (or append) BENCHMARKS.md's section from MARK on."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    head = text.split(MARK)[0].rstrip("\n")
    path.write_text(head + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
