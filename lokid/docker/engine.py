"""The engine connection: every blocking SDK call runs in a worker thread.

Short calls share a small `CapacityLimiter` so a burst of requests cannot pile up threads;
long streams (the event watch, pulls, followed logs) get their own. An engine that cannot be
reached becomes `Unavailable` naming the endpoint, the daemon stays up, and the client is
built again on the next call (a restarted engine may speak another API version).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import docker
import docker.errors
import docker.utils
import requests.exceptions
import trio

from lokid.docker.endpoint import Endpoint
from lokid.errors import Conflict, EngineDown, InvalidParams, LokidError, NotFound, Unavailable
from lokid.log import redact

log = logging.getLogger("lokid.docker")

T = TypeVar("T")

CALL_THREADS = 8
STREAM_THREADS = 64
CALL_TIMEOUT = 120  # seconds; a pull or a stop may take a while

_DOWN = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


class Engine:
    def __init__(self, endpoint: Endpoint, secrets: list[str]) -> None:
        self.endpoint = endpoint
        self.secrets = secrets
        self.up = False
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._calls = trio.CapacityLimiter(CALL_THREADS)
        self._streams = trio.CapacityLimiter(STREAM_THREADS)

    # -- in the worker thread ---------------------------------------------------------

    def _connect(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None:
                options: dict[str, Any] = {"base_url": self.endpoint.host}
                if self.endpoint.source == "DOCKER_HOST":
                    # DOCKER_TLS_VERIFY and DOCKER_CERT_PATH go with DOCKER_HOST.
                    options = docker.utils.kwargs_from_env()
                try:
                    self._client = docker.DockerClient(
                        **options, version="auto", timeout=CALL_TIMEOUT
                    )
                except docker.errors.DockerException as exc:
                    raise EngineDown(str(exc)) from exc
            return self._client

    def _forget(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def run_blocking(self, fn: Callable[[docker.DockerClient], T]) -> T:
        """Call `fn(client)` here and now (already in a worker thread), errors translated."""
        try:
            result = fn(self._connect())
        except _DOWN as exc:
            self._forget()
            self.up = False
            raise EngineDown(str(exc)) from exc
        except EngineDown:
            self.up = False
            raise
        self.up = True
        return result

    # -- from trio --------------------------------------------------------------------

    def unavailable(self, why: str) -> EngineDown:
        """The engine is down, as a client is told (the endpoint named, secrets removed)."""
        host, source = self.endpoint.host, self.endpoint.source
        return EngineDown(
            f"Docker engine not reachable at {host} ({source}): {self.clean(why)[:300]}",
            {"endpoint": host, "source": source},
        )

    def clean(self, text: str) -> str:
        """Engine messages can echo what they were given; secrets never leave lokid.
        (As lokid.log does, values under 4 characters are not secrets worth mangling text.)"""
        return redact(text, [v for v in self.secrets if len(v) >= 4])

    def translate(self, exc: docker.errors.APIError, what: str) -> LokidError:
        message = self.clean(f"{what}: {exc.explanation or exc}")
        if exc.status_code == 404:
            return NotFound(message)
        if exc.status_code == 409:
            return Conflict(message)
        if exc.status_code == 400:
            return InvalidParams(message)
        return Unavailable(message, {"status": exc.status_code})

    async def call(self, fn: Callable[[docker.DockerClient], T], what: str = "docker") -> T:
        try:
            return await trio.to_thread.run_sync(self.run_blocking, fn, limiter=self._calls)
        except EngineDown as exc:
            raise self.unavailable(exc.message) from exc
        except docker.errors.APIError as exc:
            raise self.translate(exc, what) from exc

    async def stream(
        self,
        open_stream: Callable[[docker.DockerClient], Iterator[Any]],
        deliver: Callable[[Any], Awaitable[None]],
        what: str = "docker stream",
    ) -> None:
        """Iterate a blocking SDK stream in a thread; each item is awaited through `deliver`
        on the trio thread, so a slow consumer holds the producer back. Cancelling closes the
        stream, which ends the thread's blocked read."""
        state: dict[str, Any] = {"stream": None, "closed": False}

        def pump() -> None:
            stream = self.run_blocking(open_stream)
            state["stream"] = stream
            if state["closed"]:
                _close(stream)
                return
            iterator = iter(stream)
            while True:
                try:
                    item = self.run_blocking(lambda _c: next(iterator, _END))
                except Exception:
                    if state["closed"]:
                        return
                    raise
                if item is _END or state["closed"]:
                    return
                trio.from_thread.run(deliver, item)

        try:
            await trio.to_thread.run_sync(pump, limiter=self._streams, abandon_on_cancel=True)
        except EngineDown as exc:
            raise self.unavailable(exc.message) from exc
        except docker.errors.APIError as exc:
            raise self.translate(exc, what) from exc
        finally:
            state["closed"] = True
            if state["stream"] is not None:
                _close(state["stream"])


_END = object()


def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            log.debug("closing a docker stream failed", exc_info=True)
