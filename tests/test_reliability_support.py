"""Shared helpers for the reliability suite (no tests here): raw framed sockets, RSS, a bystander.

The raw socket speaks the framing by hand (not through `lokictl.Client`) so a test can send
what a well-behaved client never would: wrong lengths, broken bodies, wrong shapes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from lokictl import Client

CLOSED = "closed"
SILENT = "silent"


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


class RawConn:
    """A unix socket that sends arbitrary bytes and reads whole frames (or sees a close)."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = bytearray()
        self.closed = False

    def send(self, data: bytes) -> bool:
        """False when the daemon already closed its end (a legitimate answer to garbage)."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True
            return False
        return True

    def read(self, timeout: float) -> Any:
        """The next decoded message, CLOSED when the daemon closed, SILENT on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    body = bytes(self.buf[4 : 4 + n])
                    del self.buf[: 4 + n]
                    return msgspec.msgpack.decode(body)
            left = deadline - time.monotonic()
            if left <= 0:
                return SILENT
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return SILENT
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                return CLOSED
            self.buf += chunk

    def reply_to(self, msgid: Any, timeout: float) -> Any:
        """The response to `msgid` (or one with msgid nil), skipping notifications."""
        while True:
            msg = self.read(timeout)
            if msg in (CLOSED, SILENT):
                return msg
            if isinstance(msg, list) and msg and msg[0] == 1 and msg[1] in (msgid, None):
                return msg

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class Bystander:
    """Another client pinging throughout: proves one bad peer never starves the others."""

    def __init__(self, socket_path: Path, period: float = 0.05) -> None:
        self.socket_path = socket_path
        self.period = period
        self.worst = 0.0
        self.pings = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            client = Client.connect(self.socket_path, timeout=30)
        except Exception as exc:
            self.failures.append(f"connect: {exc!r}")
            return
        with client:
            while not self._stop.wait(self.period):
                start = time.monotonic()
                try:
                    client.call("ping")
                except Exception as exc:
                    self.failures.append(repr(exc))
                    return
                self.worst = max(self.worst, time.monotonic() - start)
                self.pings += 1
