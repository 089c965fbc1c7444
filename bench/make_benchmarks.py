"""Regenerate BENCHMARKS.md and its plots: every figure a ratio measured side by side, one run.

Runs the measurements of the bench_*.py scripts (their functions, not their printouts) and
writes BENCHMARKS.md at the repository root with PNG plots in bench/plots/. matplotlib is a
bench-only dependency (`pip install -e '.[bench]'`; `make benchmarks` does it).

- ping: lokid beside a plain blocking echo server, alternating rounds;
- queue: claim+complete through lokid beside `../shared/baselines/jq-claim.sh` (skipped with
  a note when absent);
- claim latency and lokid's RSS as one project grows to 1k, 10k, 100k and 1M pending tasks
  (the 1M fill is time-boxed: the table says how far it got);
- a file written in `.loki/` to the event at the client, beside raw watchfiles (inotify);
- run start through lokid beside `docker run -d`, only when an engine can be had;
- worker cycles under 1, 8 and 32 agents beside BullMQ on a private Redis (bench_peers.py),
  lokid's CPU per cycle and its idle CPU.

usage: python bench/make_benchmarks.py [--quick] [--fill-budget 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import ROOT, LokidProcess, connect, frame, interleave, pct, round_trips
from bench_peers import PeerResults, measure_idle, measure_peers, table, targets
from bench_ping import start_echo_process
from bench_queue import BASELINES, cycles, fill, fused_cycles, shell_claims
from bench_watch import lokid_latencies, raw_latencies

PLOTS = ROOT / "bench" / "plots"
OUT = ROOT / "BENCHMARKS.md"
SIZES = (1_000, 10_000, 100_000, 1_000_000)


@dataclass
class Results:
    """Everything measured, in plain numbers (microseconds unless named otherwise)."""

    ping: dict[str, list[float]] = field(default_factory=dict)
    claims: dict[int, list[float]] = field(default_factory=dict)  # pending count -> claim us
    cycles_10k: list[float] = field(default_factory=list)
    fused_10k: list[float] = field(default_factory=list)  # complete with claimNext
    ping_10k: list[float] = field(default_factory=list)  # lokid's ping, alternating with those
    rss_mib: dict[int, float] = field(default_factory=dict)  # task count -> RSS
    fill_rate: float = 0.0
    filled: int = 0
    fill_note: str = ""
    shell: dict[int, float] = field(default_factory=dict)  # tasks -> claims/s
    shell_note: str = ""
    events: dict[str, list[float]] = field(default_factory=dict)
    runs: dict[str, list[float]] = field(default_factory=dict)  # seconds
    runs_note: str = ""
    peers: PeerResults = field(default_factory=PeerResults)
    peer_agents: tuple[int, ...] = (1, 8, 32)
    peer_rounds: int = 3
    seconds: float = 0.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_ping(res: Results, n: int, rounds: int) -> None:
    """lokid's ping beside an echo server in its own process, same client code, alternating."""
    ping = frame([0, 1, "ping", {}])
    with LokidProcess() as lokid:
        echo_path = Path(tempfile.mkdtemp(prefix="lke-", dir="/tmp")) / "echo.sock"
        pid = start_echo_process(echo_path)
        deadline = time.monotonic() + 10
        while not echo_path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        echo_sock, lokid_sock = connect(echo_path), connect(lokid.socket)
        round_trips(lokid_sock, ping, 1000)  # warm up both
        round_trips(echo_sock, ping, 1000)
        res.ping["lokid"], res.ping["echo"] = interleave(
            rounds,
            lambda: round_trips(lokid_sock, ping, n),
            lambda: round_trips(echo_sock, ping, n),
        )
        echo_sock.close()
        lokid_sock.close()
        os.waitpid(pid, 0)
        shutil.rmtree(echo_path.parent, ignore_errors=True)


def measure_queue(res: Results, sizes: tuple[int, ...], budget: float, samples: int) -> None:
    """One project grows through `sizes`; at each, claim latency and lokid's RSS.

    The claims take tasks from the queue, so each level is `samples` short of its name: noise
    next to its size. The fill stops at `budget` seconds (the 1M level on a slow machine).
    """
    work = Path(tempfile.mkdtemp(prefix="lkbq-", dir="/tmp"))
    project = work / "grow"
    project.mkdir()
    with LokidProcess() as lokid:
        assert lokid.proc is not None
        sock = connect(lokid.socket)
        res.rss_mib[0] = rss_mib(lokid.proc.pid)
        started, have, rates = time.monotonic(), 0, []
        for size in sizes:
            if time.monotonic() - started > budget:
                res.fill_note = f"stopped at {have:,} tasks: the {budget:.0f} s fill budget ran out"
                break
            rates.append(fill(sock, str(project), size - have, f"n{size}"))
            have = size
            time.sleep(2)  # let the coalesced view writes of this fill pass
            res.claims[size] = cycles(sock, str(project), samples)[0]
            res.rss_mib[size] = rss_mib(lokid.proc.pid)
            if size == 10_000:
                ping = frame([0, 1, "ping", {}])
                for _ in range(5):
                    res.cycles_10k += cycles(sock, str(project), samples // 5)[1]
                    res.fused_10k += fused_cycles(sock, str(project), samples // 5)
                    res.ping_10k += round_trips(sock, ping, samples // 5)
        res.filled = have
        res.fill_rate = statistics.median(rates) if rates else 0.0
        sock.close()
    shutil.rmtree(work, ignore_errors=True)


def measure_shell(res: Results, claims: int) -> None:
    if not (BASELINES / "jq-claim.sh").exists():
        res.shell_note = f"skipped: {BASELINES} is absent"
    elif not (shutil.which("jq") and shutil.which("flock")):
        res.shell_note = "skipped: jq or flock is missing"
    else:
        for n in (1_000, 10_000):
            res.shell[n] = shell_claims(n, claims)


def measure_events(res: Results, n: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="lkbw-", dir="/tmp"))
    try:
        with LokidProcess() as lokid:
            ours: list[float] = []
            raw: list[float] = []
            for i in range(4):  # alternate, so drift hits both alike
                ours += lokid_latencies(lokid, work / f"l{i}", n // 4)
                raw += raw_latencies(work / f"r{i}", n // 4)
        res.events = {"lokid": ours, "raw": raw}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_runs(res: Results, reps: int) -> None:
    """bench_runs.py's comparison, only when an engine can be reached or started."""
    if shutil.which("docker") is None:
        res.runs_note = "skipped: no docker CLI on this machine"
        return
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "clients")]
    try:
        import bench_runs
        from dockerenv import DockerEnv
    except Exception as exc:
        res.runs_note = f"skipped: {exc}"
        return
    try:
        env = DockerEnv().start()
    except Exception as exc:
        res.runs_note = f"skipped: no engine could be reached or started ({exc})"
        return
    try:
        res.runs = run_pairs(env, bench_runs, reps)
    finally:
        env.close()


def run_pairs(env: Any, bench_runs: Any, reps: int) -> dict[str, list[float]]:
    from lokictl import Client

    work = Path(tempfile.mkdtemp(prefix="lkbr-", dir="/tmp"))
    env.publish()
    env.pull(env.image)
    docker = [shutil.which("docker") or "docker", "--host", env.host]
    (work / "home").mkdir()
    lokid_env = {
        "DOCKER_HOST": env.host,
        "HOME": str(work / "home"),
        "LOKI_DOCKER_IMAGE": env.image,
    }
    out: dict[str, list[float]] = {"lokid": [], "docker run": []}
    try:
        with LokidProcess(env=lokid_env) as lokid, Client.connect(lokid.socket) as client:
            client.call("subscribe", {"topics": ["run.started"]})
            ours, theirs = str(work / "via-lokid"), str(work / "via-cli")
            os.mkdir(ours)
            os.mkdir(theirs)
            for rep in range(reps + 1):  # the first round warms both up
                a = bench_runs.lokid_start(client, ours)
                b = bench_runs.cli_start(docker, theirs, env.image)
                bench_runs.lokid_stop(client, ours)
                bench_runs.cli_stop(docker, theirs)
                if rep:
                    out["lokid"].append(a)
                    out["docker run"].append(b)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


# -- plots and the page -------------------------------------------------------------------


def plot(res: Results) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    names = []
    sizes = sorted(res.claims)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(sizes, [pct(res.claims[s], 50) for s in sizes], "o-", label="claim p50")
    ax1.plot(sizes, [pct(res.claims[s], 99) for s in sizes], "s--", label="claim p99")
    ax1.set(xscale="log", xlabel="pending tasks", ylabel="µs", title="claim latency vs tasks")
    ax1.legend()
    counts = sorted(res.rss_mib)
    ax2.plot([max(c, 100) for c in counts], [res.rss_mib[c] for c in counts], "o-")
    ax2.set(xscale="log", xlabel="tasks (0 drawn at 100)", ylabel="MiB", title="lokid RSS")
    fig.tight_layout()
    fig.savefig(PLOTS / "cost_vs_tasks.png", dpi=80)
    plt.close(fig)
    names.append("cost_vs_tasks.png")

    series = [
        ("ping", {"lokid": res.ping["lokid"], "blocking echo": res.ping["echo"]}),
        ("claim at each size", {f"{s:,}": res.claims[s] for s in sizes}),
        (
            "file → event",
            {"lokid → client": res.events["lokid"], "raw watchfiles": res.events["raw"]},
        ),
    ]
    fig, axes = plt.subplots(1, len(series), figsize=(14, 4))
    for ax, (title, groups) in zip(axes, series, strict=True):
        for label, values in groups.items():
            ordered = sorted(values)
            ax.plot(ordered, [i / len(ordered) for i in range(len(ordered))], label=label)
        ax.set(xscale="log", xlabel="µs", ylabel="fraction ≤ x", title=f"{title} (CDF)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(PLOTS / "latency_distributions.png", dpi=80)
    plt.close(fig)
    names.append("latency_distributions.png")
    return names


def measure_peer_step(res: Results, quick: bool) -> None:
    res.peer_agents = (1, 8) if quick else (1, 8, 32)
    res.peer_rounds = 1 if quick else 3
    measure_idle(res.peers)
    measure_peers(res.peers, res.peer_rounds, 1.0 if quick else 2.0, res.peer_agents)


def ratio_rows(res: Results) -> list[tuple[str, str, str, str]]:
    """(figure, lokid, baseline, ratio) rows for the summary table."""
    rows = []
    lp, ep = pct(res.ping["lokid"], 50), pct(res.ping["echo"], 50)
    rows.append(
        ("ping round trip p50", f"{lp:.1f} µs", f"{ep:.1f} µs (blocking echo)", f"{lp / ep:.2f}x")
    )
    lp99, ep99 = pct(res.ping["lokid"], 99), pct(res.ping["echo"], 99)
    rows.append(
        (
            "ping round trip p99",
            f"{lp99:.1f} µs",
            f"{ep99:.1f} µs (blocking echo)",
            f"{lp99 / ep99:.2f}x",
        )
    )
    if res.cycles_10k:
        rate = 1e6 / statistics.mean(res.cycles_10k)
        for n, shell in sorted(res.shell.items()):
            rows.append(
                (
                    f"claims/s, lokid at 10k pending vs shell at {n:,}",
                    f"{rate:,.0f}/s (claim+complete)",
                    f"{shell:.2f}/s (jq-claim.sh)",
                    f"{rate / shell:,.0f}x",
                )
            )
    if res.ping_10k:
        ping = pct(res.ping_10k, 50)
        for name, lat in (("two requests", res.cycles_10k), ("one, claimNext", res.fused_10k)):
            rows.append(
                (
                    f"claim+complete p50 at 10k pending, {name}",
                    f"{pct(lat, 50):.1f} µs",
                    f"{ping:.1f} µs (lokid ping)",
                    f"{pct(lat, 50) / ping:.2f}x",
                )
            )
    base = pct(res.claims[min(res.claims)], 50)
    for size in sorted(res.claims):
        p50 = pct(res.claims[size], 50)
        rows.append(
            (
                f"claim p50 at {size:,} pending",
                f"{p50:.1f} µs",
                f"{base:.1f} µs at 1,000",
                f"{p50 / base:.2f}x",
            )
        )
    le, re_ = pct(res.events["lokid"], 50), pct(res.events["raw"], 50)
    rows.append(
        (
            "file → event p50",
            f"{le / 1000:.2f} ms",
            f"{re_ / 1000:.2f} ms (raw watchfiles)",
            f"{le / re_:.2f}x",
        )
    )
    if res.runs:
        lr, dr = statistics.median(res.runs["lokid"]), statistics.median(res.runs["docker run"])
        rows.append(
            (
                "run start (median)",
                f"{lr * 1000:.0f} ms",
                f"{dr * 1000:.0f} ms (docker run -d)",
                f"{lr / dr:.2f}x",
            )
        )
    idle = res.rss_mib[0]
    for count in sorted(c for c in res.rss_mib if c):
        rss = res.rss_mib[count]
        rows.append(
            (
                f"RSS at {count:,} tasks",
                f"{rss:.0f} MiB",
                f"{idle:.0f} MiB idle",
                f"{rss / idle:.2f}x",
            )
        )
    return rows


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), "
        f"{mem:.0f} GiB RAM, Python {platform.python_version()}; "
        f"load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
    )


def write_page(res: Results, pngs: list[str], noisy: str) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# lokid benchmarks",
        "",
        f"Generated by `make benchmarks` (`bench/make_benchmarks.py`) on {now} in "
        f"{res.seconds / 60:.1f} minutes. Every figure is a ratio of two things measured side by "
        "side in this one run (alternating rounds where it matters), never against numbers "
        "from elsewhere.",
        "",
        f"**Machine:** {machine()}.",
        "",
        f"**Noise:** {noisy}",
        "",
        "| figure | lokid | baseline | ratio |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in ratio_rows(res)]
    lines += ["", "## Notes", ""]
    lines.append(
        f"- Fill: pipelined `queue.enqueue_many` at a median {res.fill_rate:,.0f} tasks/s; "
        f"the project reached {res.filled:,} tasks. {res.fill_note or 'All sizes were reached.'}"
    )
    lines.append(
        "- Claim latency is the `queue.claim` round trip of one blocking client over the unix "
        "socket, with tasks of four types and ten priorities; at each size the project holds "
        "that many pending tasks (one growing project, so RSS is for that many tasks)."
    )
    if res.shell_note:
        lines.append(f"- Shell baseline {res.shell_note}.")
    else:
        lines.append(
            "- Shell baseline: `../shared/baselines/jq-claim.sh`, one process per claim on a "
            "`pending.json` of that many tasks (its own spec's claim), beside lokid's "
            "claim+complete cycle at 10,000 pending."
        )
    lines.append(
        "- Events: a file touched in `.loki/signals/` until the `signal.*` event reaches a "
        "subscribed client, beside a bare `watchfiles.watch` (inotify) in this process with "
        "lokid's step and debounce settings."
    )
    lines.append(
        f"- Runs: {res.runs_note}"
        if res.runs_note
        else "- Runs: `run.start` (no pull) until the `run.started` event, beside `docker run -d` "
        "of the same image, mount and labels, on the same engine (tests/dockerenv.py)."
    )
    lines += peer_section(res)
    lines += ["", "## Plots", ""]
    lines += [f"![{p}](bench/plots/{p})" for p in pngs]
    lines.append("")
    # Sections other scripts write (bench_postgres.py --write) are kept as they were.
    kept = OUT.read_text().partition("<!-- bench_postgres.py -->") if OUT.exists() else ()
    if kept and kept[1]:
        lines += ["", kept[1] + kept[2]]
    OUT.write_text("\n".join(lines))


def peer_section(res: Results) -> list[str]:
    """Issue 17's table: lokid beside BullMQ, with the targets and how they were measured."""
    peers = res.peers
    if not peers.runs:
        return []
    lines = [
        "",
        "## Worker cycles beside BullMQ",
        "",
        f"`bench/bench_peers.py`: {res.peer_rounds} alternating rounds of 2 s per system and "
        "agent count, medians; 10,000 tasks or more pending throughout. One cycle is one "
        "worker's complete-and-take-the-next: lokid's `queue.complete` with `claimNext` (one "
        "request), BullMQ's moveToFinished with its next job (one call).",
        "",
    ]
    if peers.bullmq_note:
        lines += [f"BullMQ was skipped: {peers.bullmq_note}.", ""]
    lines += table(peers, res.peer_agents)
    lines += ["", "Against issue 17's targets:", ""]
    lines += [f"- {t}" for t in targets(peers, res.peer_agents)]
    lines += [
        "",
        "How each was run:",
        "",
        "- Agents, both systems alike: N agents, each with its own connection, all in one "
        "process on one event loop (measured on 2 cores: a process each spends more CPU in "
        "the agents than in the queue, for both; `bench_peers.py --processes each` runs that).",
        "- lokid: `lokid serve` as shipped, one daemon per durability; the agents are "
        "`bench/peer_agent.py` (raw frames; a blocking loop for one agent, `selectors` for "
        "more). Requests ready together run as one group commit (one transaction, one fsync "
        "at `full`, per project), each a savepoint.",
        "- BullMQ 6.7.0 (pinned in `bench/peers/package.json`, installed by `npm ci` into "
        "`bench/peers/node_modules`): "
        "the agents are Workers of concurrency 1 in one Node process; jobs without "
        "priorities (its fastest path; lokid's claims honour priorities and four task "
        "types). `redis-server` is private: "
        "127.0.0.1, its own port and folder, `appendonly yes`, `appendfsync everysec`, no "
        "RDB snapshots.",
        "- CPU per cycle: utime+stime of the daemon's process (every thread: request path, "
        "view writer, checkpoints, watcher) over the window, from /proc/<pid>/stat, divided by "
        "the cycles; redis-server's the same way for comparison (BullMQ's Node process not "
        "counted). Idle: the daemon alone for 5 s with 50 watched projects whose queues are "
        "open and 8 connected agents that sent one claim and then nothing.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--fill-budget", type=float, default=300, help="seconds to fill queues")
    args = parser.parse_args()
    sizes = SIZES[:2] if args.quick else SIZES
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    res = Results()
    steps = [
        ("ping vs echo", lambda: measure_ping(res, 1000 if args.quick else 3000, 6)),
        ("queue growth", lambda: measure_queue(res, sizes, args.fill_budget, 300)),
        ("shell baseline", lambda: measure_shell(res, 3 if args.quick else 10)),
        ("file -> event", lambda: measure_events(res, 40 if args.quick else 200)),
        ("run start", lambda: measure_runs(res, 2 if args.quick else 8)),
        ("beside BullMQ", lambda: measure_peer_step(res, args.quick)),
    ]
    for name, step in steps:
        print(f"- {name} ...", flush=True)
        step()
    res.seconds = time.monotonic() - started
    noisy = (
        f"the 1-minute load average was {load_before:.2f} before and {os.getloadavg()[0]:.2f} "
        "after on "
        f"{os.cpu_count()} cores. This machine is shared with other engineers' test runs and "
        "Docker builds, so absolute numbers are noisy (10-25% run to run); the ratios, measured "
        "side by side, are what to read."
    )
    write_page(res, plot(res), noisy)
    print(OUT.read_text())


if __name__ == "__main__":
    main()
