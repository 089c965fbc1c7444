"""The blocking client: one socket, requests matched to replies by msgid.

Events that arrive while a reply is awaited are kept, in order, for `events()`.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from lokid.paths import default_socket_path
from lokid.wire.framing import DEFAULT_MAX_FRAME, HEADER, FrameDecoder
from lokid.wire.messages import Notification, Request, Response, ServerMessage

T = TypeVar("T")

# A timeout for waits that must never give up (live streams, long requests).
FOREVER = math.inf

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ServerMessage)


class NotRunning(Exception):
    """No daemon answers on the socket."""


class ProtocolError(Exception):
    """The daemon closed the connection or sent something outside the protocol."""


class DaemonError(Exception):
    """The daemon answered a request with an error."""

    def __init__(self, code: str, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data


def _connect_once(path: Path, timeout: float | None) -> socket.socket:
    """Connect; a full listen backlog (EAGAIN, immediate on unix sockets) is waited out."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.001
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                raise NotRunning(f"lokid is not running on {path}") from None
            if exc.errno != errno.EAGAIN or (deadline and time.monotonic() >= deadline):
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class Client:
    def __init__(self, sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._sock = sock
        self._frames = FrameDecoder(max_frame)
        self._ids = itertools.count(1)
        self._events: deque[Any] = deque()
        self._replies: dict[int, Response] = {}

    @classmethod
    def connect(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        spawn: bool = False,
        timeout: float | None = 30.0,
        spawn_wait: float = 10.0,
    ) -> Client:
        """Connect; with `spawn`, start lokid when nobody answers and retry: through its
        socket unit when one is installed for `path`, else as `lokid serve`."""
        path = Path(path) if path is not None else default_socket_path()
        try:
            return cls(_connect_once(path, timeout))
        except NotRunning:
            if not spawn:
                raise
        from lokictl._spawn import spawn_daemon, start_service

        if start_service(path):
            what = "lokid's socket unit"
        else:
            spawn_daemon(path)
            what = "lokid"
        deadline = time.monotonic() + spawn_wait
        delay = 0.005
        while True:
            try:
                return cls(_connect_once(path, timeout))
            except NotRunning:
                if time.monotonic() >= deadline:
                    raise NotRunning(
                        f"started {what} but it did not answer on {path} within {spawn_wait:g}s"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    # -- requests ------------------------------------------------------------------------

    def send(self, method: str, params: Any = None) -> int:
        """Send a request without waiting; returns its msgid (for pipelining)."""
        msgid = next(self._ids)
        self._write(Request(msgid, method, msgspec.Raw(_encoder.encode(params or {}))))
        return msgid

    def notify(self, method: str, params: Any = None) -> None:
        self._write(Notification(method, params or {}))

    def cancel(self, msgid: int) -> None:
        self.notify("$/cancel", {"id": msgid})

    def call(self, method: str, params: Any = None, *, type: type[T] | None = None) -> Any:
        """Send a request and wait for its reply; raises `DaemonError` on an error reply."""
        return self.result(self.send(method, params), type=type)

    def result(self, msgid: int, *, type: type[T] | None = None) -> Any:
        reply = self._wait_reply(msgid)
        if reply.error is not None:
            raise DaemonError(reply.error.code, reply.error.message, reply.error.data)
        if type is None:
            return reply.result
        return msgspec.convert(reply.result, type)

    def events(self, timeout: float | None = None) -> Iterator[Any]:
        """Yield event params (`{sub, seq, topic, project, time, data}`) as they come.

        `timeout` bounds each wait (None: the socket's own timeout); `FOREVER` waits
        as long as it takes, as a live stream must however quiet it is."""
        while True:
            while self._events:
                yield self._events.popleft()
            self._pump(timeout)

    def stream(self) -> Iterator[Any]:
        """Events until the connection ends (`ProtocolError`): never times out."""
        return self.events(FOREVER)

    def next_event(self, timeout: float | None = None) -> Any:
        while not self._events:
            self._pump(timeout)
        return self._events.popleft()

    def wait(
        self, msgid: int, on_event: Callable[[Any], None], timeout: float | None = FOREVER
    ) -> Any:
        """The reply to `msgid` (as `result`), handing each event that arrives meanwhile
        to `on_event`: a long request (a pull, a stop's grace) with its progress."""
        while True:
            while self._events:
                on_event(self._events.popleft())
            if msgid in self._replies:
                return self.result(msgid)
            self._pump(timeout)

    # -- plumbing ------------------------------------------------------------------------

    def _write(self, msg: Request | Notification) -> None:
        buf = bytearray(4)
        _encoder.encode_into(msg, buf, 4)
        HEADER.pack_into(buf, 0, len(buf) - 4)
        self._sock.sendall(buf)

    def _wait_reply(self, msgid: int) -> Response:
        while msgid not in self._replies:
            self._pump(None)
        return self._replies.pop(msgid)

    def _pump(self, timeout: float | None) -> None:
        """Read at least one frame and file it as a reply or an event."""
        if timeout is not None:
            previous = self._sock.gettimeout()
            self._sock.settimeout(None if timeout == FOREVER else timeout)
            try:
                data = self._sock.recv(256 * 1024)
            finally:
                self._sock.settimeout(previous)
        else:
            data = self._sock.recv(256 * 1024)
        if not data:
            raise ProtocolError("lokid closed the connection")
        for frame in self._frames.feed(data):
            msg = _decoder.decode(frame)
            if type(msg) is Response:
                if msg.msgid is None:
                    error = msg.error
                    raise ProtocolError(f"{error.code}: {error.message}" if error else "bad reply")
                self._replies[msg.msgid] = msg
            elif msg.method == "event":
                self._events.append(msg.params)
        if self._frames.error is not None:
            raise ProtocolError(f"lokid sent {self._frames.error}")
