"""Run every benchmark in turn, each printing its ratios measured side by side.

usage: python bench/run_all.py   (or `make bench`)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "bench_ping.py",
    "bench_queue.py",
    "bench_breakers.py",
    "bench_watch.py",
    "bench_runs.py",
    "bench_mcp.py",
    "bench_postgres.py",
    "bench_peers.py",
]


def main() -> int:
    failed = []
    for name in SCRIPTS:
        print(f"\n$ {Path(sys.executable).name} bench/{name}", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)], cwd=HERE.parent).returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
