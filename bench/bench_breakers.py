"""Claim latency with 50 task types of which 25 have open breakers, beside the same
queue with every breaker closed, measured in alternating rounds in one lokid.

usage: python bench/bench_breakers.py [--per-type 200] [--rounds 8] [--claims 100]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _common import LokidProcess, connect, pct
from bench_queue import cycles, fill_types, rpc

TYPES = [f"type-{i:02d}" for i in range(50)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-type", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--claims", type=int, default=100)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lkbr-"))
    closed, half_open = root / "closed", root / "open"
    for path in (closed, half_open):
        path.mkdir()
    with LokidProcess() as lokid:
        sock = connect(lokid.socket)
        for project in (closed, half_open):
            fill_types(sock, str(project), TYPES, args.per_type)
        for task_type in TYPES[::2]:  # 25 of the 50 types
            rpc(sock, 1, "breaker.trip", {"project": str(half_open), "type": task_type})
        closed_us, open_us = [], []
        cycles(sock, str(closed), 200, TYPES)  # warm up
        cycles(sock, str(half_open), 200, TYPES)
        for _ in range(args.rounds):
            closed_us += cycles(sock, str(closed), args.claims, TYPES)[0]
            open_us += cycles(sock, str(half_open), args.claims, TYPES)[0]
        sock.close()
    shutil.rmtree(root, ignore_errors=True)
    print(f"claim latency, 50 task types x {args.per_type} tasks, agent capable of all 50")
    for name, lat in (("all closed", closed_us), ("25 open", open_us)):
        print(f"  {name:10}  p50 {pct(lat, 50):7.1f} us  p99 {pct(lat, 99):7.1f} us")
    ratio = pct(open_us, 50) / pct(closed_us, 50)
    print(f"  ratio 25-open/all-closed p50: {ratio:.2f}x  (target <= 1.2x)")


if __name__ == "__main__":
    main()
