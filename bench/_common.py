"""Shared bench helpers: a lokid process, raw framed round trips, statistics."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent


class LokidProcess:
    """`lokid serve` on a private socket, for the length of a `with` block."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lkb-", dir="/tmp"))
        self.socket = self.dir / "run" / "lokid.sock"
        self.args = args
        self.env = {**os.environ, "XDG_STATE_HOME": str(self.dir / "state"), **(env or {})}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LokidProcess:
        cmd = [sys.executable, "-m", "lokid", "serve", "--socket", str(self.socket)]
        self.proc = subprocess.Popen(
            [*cmd, "--log-level", os.environ.get("LOKID_BENCH_LOG", "warning"), *self.args],
            env=self.env,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                connect(self.socket).close()
                return self
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("lokid did not start")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return sock


def frame(obj: object) -> bytes:
    body = msgspec.msgpack.encode(obj)
    return struct.pack(">I", len(body)) + body


def read_frame(sock: socket.socket) -> bytes:
    header = recv_exact(sock, 4)
    return recv_exact(sock, struct.unpack(">I", header)[0])


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


def round_trips(sock: socket.socket, request: bytes, n: int) -> list[float]:
    """Latency in microseconds of `n` sequential request/response round trips."""
    decode = msgspec.msgpack.decode
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        sock.sendall(request)
        decode(read_frame(sock))
        out.append((clock() - start) / 1000)
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    return f"p50 {pct(values, 50):8.1f} us  p99 {pct(values, 99):8.1f} us"


def median_wall(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleave(rounds: int, *measures: Callable[[], list[float]]) -> list[list[float]]:
    """Run the measures alternately, `rounds` times, so drift hits them alike."""
    results: list[list[float]] = [[] for _ in measures]
    for _ in range(rounds):
        for i, measure in enumerate(measures):
            results[i].extend(measure())
    return results
