"""Test support: a real lokid process on a real socket, and condition waits.

Waits poll for a condition with a deadline; none sleeps and hopes.
"""

from __future__ import annotations

import os
import pwd
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from signal import SIGTERM
from typing import Any

import msgspec

from lokictl import Client


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def join_all(threads: list[threading.Thread], timeout: float = 90) -> None:
    """Wait for every thread; fail if any is still running after `timeout` in all."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads still running after the deadline"


def run_threads(target: Callable[..., object], args: list[tuple], timeout: float = 90) -> None:
    """One thread per argument tuple, all started, then all joined (see join_all)."""
    threads = [threading.Thread(target=target, args=a) for a in args]
    for thread in threads:
        thread.start()
    join_all(threads, timeout)


def no_engine(root: Path) -> dict[str, str]:
    """An engine endpoint where nothing listens: run.* and image.* answer `unavailable`."""
    return {"DOCKER_HOST": f"unix://{root}/no-docker.sock"}


def short_tmpdir(prefix: str = "lk-") -> Path:
    """A short folder under /tmp: unix socket paths must fit in 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


# Every lokid the tests started (conftest's `_no_lokid_left_behind` kills those still up
# after each test, passed or failed).
STARTED: list[Lokid] = []


class Lokid:
    """A `lokid serve` subprocess with its own socket, state folder and log file."""

    def __init__(
        self,
        root: Path,
        *args: str,
        env: dict[str, str] | None = None,
        permissions_apply: bool = False,
    ) -> None:
        self.root = root
        # As root, file permissions do not apply; dropping the two capabilities that bypass
        # them makes lokid meet a folder it may not read as any user would.
        self.permissions_apply = permissions_apply and os.geteuid() == 0
        self.socket = root / "run" / "lokid.sock"
        self.log_path = root / "lokid.log"
        self.args = args
        self.env = {
            **os.environ,
            "XDG_STATE_HOME": str(root / "state"),
            "LOKID_LOG_LEVEL": "debug",
            **(env or {}),
        }
        self.env.pop("LOKID_SOCKET", None)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def cmd(self) -> list[str]:
        serve = [sys.executable, "-m", "lokid", "serve", "--socket", str(self.socket), *self.args]
        if self.permissions_apply:
            return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *serve]
        return serve

    def start(self, wait: bool = True) -> Lokid:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env
        )
        log.close()
        STARTED.append(self)  # conftest kills whatever a test left running
        if wait:
            wait_until(self._answers, 15, f"lokid to answer on {self.socket}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"lokid exited with {self.proc.returncode}:\n{self.log()}")
        try:
            Client.connect(self.socket, timeout=5).close()
        except Exception:
            return False
        return True

    def client(self) -> Client:
        return Client.connect(self.socket, timeout=30)

    def call(self, method: str, params: Any = None) -> Any:
        with self.client() as c:
            return c.call(method, params)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, signum: int = SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def call(lokid: Lokid, method: str, project: Any, **params: Any) -> Any:
    """One request about `project` (a path), as a client on its own connection."""
    return lokid.call(method, {"project": str(project), **params})


def lokictl(lokid: Lokid, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `lokictl` against `lokid`, as a user would from `cwd`."""
    env = {**os.environ, "LOKID_SOCKET": str(lokid.socket), "PWD": str(cwd)}
    return subprocess.run(
        [sys.executable, "-m", "lokictl", "--no-spawn", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def ping_as(uid: int, path: Path) -> str:
    """Connect and ping from a forked child running as `uid`; say what happened."""
    read_end, write_end = os.pipe()
    body = msgspec.msgpack.encode([0, 1, "ping", {}])
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        outcome = b"?"
        try:
            os.setgroups([])
            os.setgid(pwd.getpwuid(uid).pw_gid)
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(struct.pack(">I", len(body)) + body)
            outcome = b"answered" if sock.recv(100) else b"closed"
        except (ConnectionResetError, BrokenPipeError):
            outcome = b"closed"
        except PermissionError:
            outcome = b"permission denied"
        except BaseException as exc:
            outcome = repr(exc).encode()
        finally:
            os.write(write_end, outcome)
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        return pipe.read().decode()
