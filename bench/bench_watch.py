"""From a file written in `.loki/` to the event at a subscribed client, beside raw
watchfiles (`watch` with the same step and debounce) on the same machine, in one
run; and lokid's idle CPU with 50 watched projects.

usage: python bench/bench_watch.py [--n 200] [--idle-seconds 10]
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path

import watchfiles
from _common import LokidProcess, pct

from lokictl import Client

STEP_MS, DEBOUNCE_MS = 5, 200  # lokid's defaults (LOKID_WATCH_STEP_MS, _DEBOUNCE_MS)


def lokid_latencies(lokid: LokidProcess, root: Path, n: int) -> list[float]:
    project = root / "lokid"
    (project / ".loki" / "signals").mkdir(parents=True)
    out = []
    with Client.connect(lokid.socket) as client:
        client.call("subscribe", {"topics": ["signal.*"]})
        client.call("project.add", {"path": str(project)})
        time.sleep(0.5)  # the watcher restarts for the new project
        for i in range(n):
            path = project / ".loki" / "signals" / f"BENCH_{i}"
            start = time.perf_counter()
            path.touch()
            while client.next_event(timeout=10)["data"]["name"] != path.name:
                pass
            out.append((time.perf_counter() - start) * 1e6)
    return out


def raw_latencies(root: Path, n: int) -> list[float]:
    folder = root / "raw" / ".loki" / "signals"
    folder.mkdir(parents=True)
    seen: queue.Queue[set[str]] = queue.Queue()
    stop = threading.Event()

    def watcher() -> None:
        for changes in watchfiles.watch(
            folder.parent, step=STEP_MS, debounce=DEBOUNCE_MS, stop_event=stop
        ):
            seen.put({Path(p).name for _, p in changes})

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    time.sleep(0.5)
    out = []
    for i in range(n):
        name = f"BENCH_{i}"
        start = time.perf_counter()
        (folder / name).touch()
        while name not in seen.get(timeout=10):
            pass
        out.append((time.perf_counter() - start) * 1e6)
    stop.set()
    thread.join(5)
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(root: Path, seconds: float) -> float:
    with LokidProcess() as lokid:
        with Client.connect(lokid.socket) as client:
            for i in range(50):
                project = root / f"idle{i:02d}"
                (project / ".loki").mkdir(parents=True)
                client.call("project.add", {"path": str(project)})
        time.sleep(3)  # let start-up and the watcher settle
        assert lokid.proc is not None
        before = cpu_seconds(lokid.proc.pid)
        time.sleep(seconds)
        return (cpu_seconds(lokid.proc.pid) - before) / seconds * 100


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lkw-"))
    try:
        with LokidProcess() as lokid:
            lokid_us, raw_us = [], []
            for _ in range(4):  # alternate, so drift hits both alike
                lokid_us += lokid_latencies(lokid, root / f"l{len(lokid_us)}", args.n // 4)
                raw_us += raw_latencies(root / f"r{len(raw_us)}", args.n // 4)
        idle = idle_cpu(root / "idle", args.idle_seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"file written in .loki/ -> event, {args.n} files, step {STEP_MS} ms")
    for name, lat in (("lokid to client", lokid_us), ("raw watchfiles", raw_us)):
        print(f"  {name:16} p50 {pct(lat, 50) / 1000:6.2f} ms  p99 {pct(lat, 99) / 1000:6.2f} ms")
    print(
        f"  ratio lokid/raw p50: {pct(lokid_us, 50) / pct(raw_us, 50):.2f}x  (target p50 < 20 ms)"
    )
    print(
        f"idle CPU with 50 watched projects over {args.idle_seconds:g} s: {idle:.2f}% of one core"
    )
    print("  (target < 1%)")


if __name__ == "__main__":
    main()
