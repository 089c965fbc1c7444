"""lokid's queue beside BullMQ on Redis: worker cycles per second under 1, 8 and 32 agents.

Each agent does one cycle at a time on its own connection: for lokid `queue.complete` with
`claimNext` (peer_agent.py), for BullMQ a Worker of concurrency 1 with an empty job
(peers/agent.mjs: its moveToFinished fetches the next job in the same call). Both systems'
agents run alike: all in one process on one event loop (`--processes each`: a process
each, which on 2 cores spends more CPU in the agents than in the queue). Every round
fills a fresh queue with 10,000 tasks plus what the round can take, so at least 10,000 stay
pending, and runs the systems one after the other (alternating rounds, medians).

- lokid `normal` (reply after commit, no fsync) and lokid `full` (fsync per commit), each
  its own daemon;
- BullMQ (pinned in peers/package.json, installed by `npm ci` into bench/peers/node_modules
  when the lock file changed) on a private `redis-server`: 127.0.0.1, a private port and
  folder, `appendonly yes`, `appendfsync everysec`, no RDB snapshots;
- lokid's CPU per cycle (utime+stime of /proc/<pid>/stat over the window, all threads);
- idle CPU: lokid with 50 watched projects and 8 connected agents that do not send.

usage: python bench/bench_peers.py [--rounds 3] [--seconds 2] [--agents 1,8,32]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from _common import HERE, LokidProcess, connect, pct
from bench_queue import fill, rpc

PEERS = HERE / "peers"
PENDING = 10_000
# Tasks added above PENDING for each second of a round: more than any system here does, so
# the queue never falls under 10,000 pending while it is measured.
HEADROOM_PER_SECOND = 14_000
TICK = os.sysconf("SC_CLK_TCK")
EXTRA_ENV: dict[str, str] = {}


@dataclass
class Run:
    """One system, one agent count, one round."""

    cycles: int
    seconds: float
    lat: list[float]
    cpu_s: float | None = None  # the server's CPU over the window
    drained: bool = False

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds


@dataclass
class PeerResults:
    runs: dict[tuple[str, int], list[Run]] = field(default_factory=dict)
    idle_cpu: float | None = None  # fraction of one core
    idle_note: str = ""
    bullmq_note: str = ""

    def add(self, system: str, agents: int, run: Run) -> None:
        self.runs.setdefault((system, agents), []).append(run)

    def rate(self, system: str, agents: int) -> float | None:
        runs = self.runs.get((system, agents))
        return statistics.median(r.rate for r in runs) if runs else None

    def p50(self, system: str, agents: int) -> float | None:
        runs = self.runs.get((system, agents))
        return statistics.median(pct(r.lat, 50) for r in runs if r.lat) if runs else None

    def cpu_per_cycle(self, system: str, agents: int) -> float | None:
        runs = [r for r in self.runs.get((system, agents), []) if r.cpu_s is not None]
        return statistics.median(r.cpu_s / r.cycles * 1e6 for r in runs) if runs else None


# -- the peers -------------------------------------------------------------------------------


def bullmq_installed() -> str:
    """'' once bench/peers/node_modules matches the lock file, else why BullMQ cannot run."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        return "node/npm missing (scripts/install-system-deps.sh installs them)"
    if shutil.which("redis-server") is None:
        return "redis-server missing (scripts/install-system-deps.sh installs it)"
    lock = hashlib.sha256((PEERS / "package-lock.json").read_bytes()).hexdigest()
    stamp = PEERS / "node_modules" / ".lokid-lock-sha256"
    if stamp.exists() and stamp.read_text() == lock:
        return ""
    env = {**os.environ, "npm_config_update_notifier": "false"}
    proc = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=PEERS,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode:
        return f"npm ci failed: {proc.stderr.strip().splitlines()[-1:]}"
    stamp.write_text(lock)
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server() -> Iterator[tuple[int, int]]:
    """A private redis-server with the AOF fsynced every second; yields its port and pid."""
    folder = Path(tempfile.mkdtemp(prefix="lkb-redis-", dir="/tmp"))
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
    args += ["--daemonize", "no", "--logfile", str(folder / "redis.log")]
    proc = subprocess.Popen(["redis-server", *args], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(folder, ignore_errors=True)


def node(*args: str) -> str:
    out = subprocess.run(
        ["node", *args], cwd=PEERS, check=True, capture_output=True, text=True, timeout=600
    )
    return out.stdout


# -- one measured window ---------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def window(commands: list[list[str]], seconds: float, server_pid: int | None, cwd: Path) -> Run:
    """Start the agents, let them all begin at one instant, gather what each did."""
    procs = [
        subprocess.Popen(
            cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        for cmd in commands
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"agent did not start: {line!r}")
        start = time.time() + 0.3
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{start}\n" if cwd == HERE else f"{int(start * 1000)}\n")
            proc.stdin.flush()
        time.sleep(max(0.0, start - time.time()))
        cpu0 = cpu_seconds(server_pid) if server_pid else None
        time.sleep(seconds)
        cpu1 = cpu_seconds(server_pid) if server_pid else None
        outs = [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    lat = [x for out in outs for x in out["lat"]]
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return Run(
        cycles=sum(o["cycles"] for o in outs),
        seconds=seconds,
        lat=lat,
        cpu_s=cpu,
        drained=any(o["drained"] for o in outs),
    )


class LokidPeer:
    """One lokid (its durability) and a fresh project per round."""

    def __init__(self, name: str, durability: str, work: Path, one_process: bool = True) -> None:
        self.name = name
        self.work = work
        self.one_process = one_process
        self.lokid = LokidProcess(env={"LOKID_DURABILITY": durability, **EXTRA_ENV})
        self.rounds = 0

    def __enter__(self) -> LokidPeer:
        self.lokid.__enter__()
        self.sock = connect(self.lokid.socket)
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        self.lokid.__exit__(*exc)

    def measure(self, agents: int, seconds: float) -> Run:
        self.rounds += 1
        project = self.work / f"{self.name}-{self.rounds}"
        project.mkdir()
        fill(self.sock, str(project), PENDING + int(HEADROOM_PER_SECOND * seconds), "p")
        time.sleep(1.0)  # the first view writes of the new project pass
        cmd = [sys.executable, "peer_agent.py", str(self.lokid.socket), str(project), str(seconds)]
        if self.one_process:  # N connections on one event loop, as BullMQ's Workers run
            commands = [[*cmd, "agent", str(agents)]]
        else:
            commands = [[*cmd, f"agent-{i}", "1"] for i in range(agents)]
        assert self.lokid.proc is not None
        run = window(commands, seconds, self.lokid.proc.pid, HERE)
        rpc(self.sock, 9, "project.remove", {"path": str(project)})
        return run


class BullPeer:
    name = "bullmq"

    def __init__(self, port: int, pid: int, one_process: bool) -> None:
        self.port = port
        self.pid = pid
        self.rounds = 0
        self.one_process = one_process

    def measure(self, agents: int, seconds: float) -> Run:
        self.rounds += 1
        queue = f"bench{self.rounds}"
        node("fill.mjs", str(self.port), queue, str(PENDING + int(HEADROOM_PER_SECOND * seconds)))
        time.sleep(1.0)  # as for lokid
        cmd = ["node", "agent.mjs", str(self.port), queue, str(seconds)]
        # N Workers on one event loop (each its own connection), or a process each
        commands = [[*cmd, str(agents)]] if self.one_process else [[*cmd, "1"]] * agents
        run = window(commands, seconds, self.pid, PEERS)
        node("fill.mjs", str(self.port), queue, "drop")
        return run


# -- idle ------------------------------------------------------------------------------------


def measure_idle(res: PeerResults, projects: int = 50, agents: int = 8, seconds: float = 5.0):
    """lokid's CPU while 50 projects are watched and 8 agents are connected but quiet."""
    work = Path(tempfile.mkdtemp(prefix="lkb-idle-", dir="/tmp"))
    try:
        with LokidProcess() as lokid:
            assert lokid.proc is not None
            sock = connect(lokid.socket)
            for i in range(projects):
                path = work / f"p{i}"
                (path / ".loki" / "queue").mkdir(parents=True)
                rpc(sock, 1, "project.add", {"path": str(path)})
                rpc(sock, 2, "queue.stats", {"project": str(path)})  # its queue open too
            quiet = [connect(lokid.socket) for _ in range(agents)]
            for i, s in enumerate(quiet):
                claim = {"project": str(work / f"p{i}"), "agent": f"a{i}", "capabilities": ["x"]}
                rpc(s, 1, "queue.claim", claim)
            time.sleep(2.0)  # the first views and the watcher's start pass
            cpu0, t0 = cpu_seconds(lokid.proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu1, t1 = cpu_seconds(lokid.proc.pid), time.monotonic()
            res.idle_cpu = (cpu1 - cpu0) / (t1 - t0)
            for s in quiet:
                s.close()
            sock.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- all of it -------------------------------------------------------------------------------


def measure_peers(
    res: PeerResults,
    rounds: int,
    seconds: float,
    agent_counts: tuple[int, ...],
    full: bool = True,
    one_process: bool = True,
) -> None:
    res.bullmq_note = bullmq_installed()
    work = Path(tempfile.mkdtemp(prefix="lkb-peers-", dir="/tmp"))
    try:
        with (
            LokidPeer("lokid normal", "normal", work, one_process) as normal,
            LokidPeer("lokid full", "full", work, one_process) as durable,
            redis_server() if not res.bullmq_note else _nothing() as redis,
        ):
            peers: list = [normal]
            if full:
                peers.append(durable)
            if redis is not None:
                peers.append(BullPeer(*redis, one_process))
            for r in range(rounds):
                for agents in agent_counts:
                    order = peers if r % 2 == 0 else list(reversed(peers))
                    for peer in order:
                        run = peer.measure(agents, seconds)
                        res.add(peer.name, agents, run)
                        print(
                            f"  round {r + 1} {peer.name:13} {agents:2} agents: "
                            f"{run.rate:8,.0f} cycles/s  p50 {pct(run.lat, 50):7.0f} us"
                            + (" (drained)" if run.drained else ""),
                            flush=True,
                        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


SYSTEMS = (
    ("lokid normal", "lokid `normal` (reply after commit, no fsync)"),
    ("lokid full", "lokid `full` (fsync per commit)"),
    ("bullmq", "BullMQ 6.7 on Redis, AOF `everysec`"),
)


def table(res: PeerResults, agent_counts: tuple[int, ...]) -> list[str]:
    """The issue's table: cycles/s per agent count, ratios to lokid `normal`."""
    head = ["system (durability)"]
    for n in agent_counts:
        head.append(f"{n} agent{'s' * (n > 1)} cycles/s" + (", p50" if n == 1 else ""))
    head.append("ratio to lokid " + " / ".join(str(n) for n in agent_counts))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label in SYSTEMS:
        if not any((key, n) in res.runs for n in agent_counts):
            continue
        cells = [label]
        ratios = []
        for n in agent_counts:
            rate = res.rate(key, n)
            base = res.rate("lokid normal", n)
            cell = "-" if rate is None else f"{rate:,.0f}"
            if n == 1 and rate is not None:
                cell += f", {res.p50(key, n):,.0f} µs"
            cells.append(cell)
            ratios.append("-" if rate is None or not base else f"{rate / base:.2f}")
        cells.append(" / ".join(ratios))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def targets(res: PeerResults, agent_counts: tuple[int, ...]) -> list[str]:
    """Issue 17's targets, each with the figure it is judged on."""
    out = []
    ln8, lf8, b8 = (res.rate(s, 8) for s in ("lokid normal", "lokid full", "bullmq"))
    if ln8 and b8:
        out.append(f"8 agents, lokid `normal` / BullMQ: {ln8 / b8:.2f}x (target ≥ 1.5x)")
    if lf8 and b8:
        out.append(f"8 agents, lokid `full` / BullMQ: {lf8 / b8:.2f}x (target ≥ 1.0x)")
    ln1, b1 = res.rate("lokid normal", 1), res.rate("bullmq", 1)
    if ln1 and b1:
        out.append(
            f"1 agent, lokid `normal` / BullMQ: {ln1 / b1:.2f}x, p50 "
            f"{res.p50('lokid normal', 1):,.0f} µs against BullMQ's {res.p50('bullmq', 1):,.0f} "
            "µs (target ≥ 1.0x)"
        )
    ln32 = res.rate("lokid normal", 32)
    if ln32 and ln8:
        out.append(f"32 agents / 8 agents, lokid `normal`: {ln32 / ln8:.2f}x (target ≥ 1.0x)")
    cpu = res.cpu_per_cycle("lokid normal", 8)
    if cpu is not None:
        bull = res.cpu_per_cycle("bullmq", 8)
        also = f" (redis-server: {bull:.0f} µs)" if bull is not None else ""
        out.append(f"lokid CPU per cycle at 8 agents: {cpu:.0f} µs{also} (target ≤ 120 µs)")
    if res.idle_cpu is not None:
        out.append(
            f"idle lokid, 50 watched projects, 8 connected quiet agents: "
            f"{res.idle_cpu * 100:.2f}% of a core (target < 1%)"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--agents", default="1,8,32")
    parser.add_argument("--no-full", action="store_true", help="skip lokid at `full`")
    parser.add_argument(
        "--processes",
        choices=("one", "each"),
        default="one",
        help="the agents of each system in one process (one event loop, a connection each: "
        "the faster way for both here) or a process each",
    )
    parser.add_argument("--no-idle", action="store_true", help="skip the idle CPU figure")
    args = parser.parse_args()
    counts = tuple(int(n) for n in args.agents.split(","))
    res = PeerResults()
    if not args.no_idle:
        measure_idle(res)
    one = args.processes == "one"
    measure_peers(res, args.rounds, args.seconds, counts, not args.no_full, one)
    rounds = f"{args.rounds} alternating rounds of {args.seconds:g} s"
    print(f"\nlokid beside BullMQ ({rounds}, medians)")
    if res.bullmq_note:
        print(f"  BullMQ skipped: {res.bullmq_note}")
    print("\n".join(table(res, counts)))
    print()
    for line in targets(res, counts):
        print(f"- {line}")


if __name__ == "__main__":
    main()
