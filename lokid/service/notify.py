"""sd_notify: tell systemd we are ready, reloading, alive or stopping.

A few lines over a datagram socket, so no extra package. Sending never blocks
and never fails the daemon: a supervisor that stopped listening must not stop us.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping

log = logging.getLogger("lokid.notify")

NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def notify_address(value: str) -> str | bytes | None:
    """`/path` as is, `@name` as an abstract address; anything else (vsock:...) unsupported."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of `WATCHDOG_USEC`, if the watchdog is ours."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = env.get("WATCHDOG_PID")
    if usec <= 0 or (owner and owner != str(pid)):
        return None
    return usec / 2 / 1_000_000


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends state lines to `$NOTIFY_SOCKET`; does nothing when there is none."""

    def __init__(self, address: str | bytes | None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog
        self._sock: socket.socket | None = None
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(
        cls, env: MutableMapping[str, str] | None = None, pid: int | None = None
    ) -> Notifier:
        """Read and unset the variables, so that no child process notifies in our name."""
        env = os.environ if env is None else env
        pid = os.getpid() if pid is None else pid
        raw = env.get("NOTIFY_SOCKET", "")
        address = notify_address(raw) if raw else None
        if raw and address is None:
            log.warning("NOTIFY_SOCKET=%s is not a unix socket address; not notifying", raw)
        watchdog = watchdog_interval(env, pid) if address is not None else None
        for name in NOTIFY_VARS:
            env.pop(name, None)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """One datagram, one `KEY=value` per line; False when it could not be sent."""
        if self._sock is None:
            return False
        payload = "\n".join(line.replace("\n", " ") for line in lines).encode()
        try:
            self._sock.sendto(payload, socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            log.debug("sd_notify %r failed: %s", lines, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def reloading(self) -> bool:
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def ping(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
