"""Ping through lokid beside a plain blocking echo server, and lokictl's start-up cost.

Both servers are driven by the same blocking client code over AF_UNIX, in
alternating rounds; the echo server (one process, recv then send) is about
the physical limit of a Python round trip on this machine.

usage: python bench/bench_ping.py [--n 5000] [--rounds 6]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
from pathlib import Path

from _common import BIN, LokidProcess, connect, frame, interleave, median_wall, pct, round_trips


def echo_server(path: Path, ready: threading.Event) -> None:
    """A plain blocking echo server: what the kernel and Python can do, no protocol."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    ready.set()
    conn, _ = srv.accept()
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.close()
    srv.close()


def start_echo_process(path: Path) -> int:
    """Fork the echo server into its own process, as lokid is its own process."""
    pid = os.fork()
    if pid == 0:
        ready = threading.Event()
        try:
            echo_server(path, ready)
        finally:
            os._exit(0)
    return pid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000, help="round trips per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--cli-runs", type=int, default=30)
    args = parser.parse_args()

    ping = frame([0, 1, "ping", {}])
    with LokidProcess() as lokid:
        echo_path = Path(tempfile.mkdtemp(prefix="lke-", dir="/tmp")) / "echo.sock"
        pid = start_echo_process(echo_path)
        while not echo_path.exists():
            pass
        echo_sock = connect(echo_path)
        lokid_sock = connect(lokid.socket)
        round_trips(lokid_sock, ping, 2000)  # warm up both
        round_trips(echo_sock, ping, 2000)
        lokid_us, echo_us = interleave(
            args.rounds,
            lambda: round_trips(lokid_sock, ping, args.n),
            lambda: round_trips(echo_sock, ping, args.n),
        )
        echo_sock.close()
        os.waitpid(pid, 0)

        env = {**os.environ, "LOKID_SOCKET": str(lokid.socket), "LOKICTL_NO_SPAWN": "1"}
        lokictl = [str(BIN / "lokictl"), "status"]
        baseline = [sys.executable, "-c", "import msgspec"]
        cli_times, base_times = [], []
        for _ in range(args.cli_runs):
            cli_times.append(median_wall(lokictl, 1, env))
            base_times.append(median_wall(baseline, 1, env))

    def rate(us: list[float]) -> float:
        return 1e6 / statistics.mean(us)

    print(f"ping round trips, {args.rounds} x {args.n} alternating, blocking client over AF_UNIX")
    print(
        f"  lokid            {rate(lokid_us):9.0f}/s  p50 {pct(lokid_us, 50):6.1f} us  "
        f"p99 {pct(lokid_us, 99):6.1f} us"
    )
    print(
        f"  blocking echo    {rate(echo_us):9.0f}/s  p50 {pct(echo_us, 50):6.1f} us  "
        f"p99 {pct(echo_us, 99):6.1f} us"
    )
    ratio50 = pct(lokid_us, 50) / pct(echo_us, 50)
    ratio99 = pct(lokid_us, 99) / pct(echo_us, 99)
    print(f"  ratio lokid/echo p50 {ratio50:.2f}x  p99 {ratio99:.2f}x  (target p50 <= 2x)")
    cli = statistics.median(cli_times) * 1000
    base = statistics.median(base_times) * 1000
    print(f"start-up, median of {args.cli_runs} alternating runs")
    print(f"  lokictl status           {cli:6.1f} ms")
    print(f"  python -c 'import msgspec' {base:6.1f} ms")
    print(f"  ratio {cli / base:.2f}x  (target <= 1.5x)")


if __name__ == "__main__":
    main()
