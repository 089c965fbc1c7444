"""Method routing: a name, its params type, and its handler.

Each area module (`lokid.methods.*`) owns a `Router`; the composition root merges them and
binds the result to the app (`Dispatch`). A handler is `(call, params) -> result`, sync or
async. Sync handlers run inline on the reader (no task to spawn; they must not block). Async
ones run as tasks, concurrently, cancellable with `$/cancel`.

A handler sees the request through `Call`: the app's parts it may use (typed by each area as
the small protocol it needs), the peer it answers, and the request's msgid.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from lokid.errors import InvalidParams, MethodNotFound, wire_error
from lokid.hub import Subscriber
from lokid.wire.daemon import Empty, Event
from lokid.wire.messages import UNDECODABLE, Error

A = TypeVar("A")


class Peer(Subscriber, Protocol):
    """The connection a request came on, as a handler may use it (also a subscriber)."""

    client: str

    async def push(self, event: Event) -> None:
        """Send an event that answers this peer's own request (never dropped; waits for room)."""
        ...


@dataclass(slots=True)
class Call(Generic[A]):
    """What a handler knows about the request it serves."""

    app: A
    peer: Peer
    msgid: int


def error_of(exc: BaseException, where: str) -> Error:
    """The error of a reply, for any exception (see `lokid.errors.wire_error`)."""
    return Error(*wire_error(exc, where))


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    params: type
    handler: Callable[[Call[Any], Any], Any]
    is_async: bool
    decoder: msgspec.msgpack.Decoder
    # A sync handler whose writes may share a group commit with other requests' (the
    # queue's operations): the connection hands it to the daemon's batcher.
    batch: bool = False
    # An async handler the connection awaits before reading on, as it runs a sync one: for
    # big work that yields between chunks (others are served meanwhile) but whose params
    # are large, so a pipelining client must not have 64 of them decoded at once.
    inline: bool = False

    def decode_params(self, raw: bytes) -> Any:
        try:
            return self.decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise InvalidParams(f"{self.name}: {exc}") from exc
        except UNDECODABLE as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise InvalidParams(f"{self.name}: params are not valid msgpack: {why}") from exc


class Router:
    def __init__(self) -> None:
        self.methods: dict[str, Method] = {}

    def method(
        self, name: str, params: type = Empty, *, batch: bool = False, inline: bool = False
    ) -> Callable[[Callable], Callable]:
        def register(handler: Callable) -> Callable:
            is_async = inspect.iscoroutinefunction(handler)
            if batch and is_async:
                raise ValueError(f"method {name!r}: only a sync handler can run in a batch")
            self._add(
                Method(
                    name=name,
                    params=params,
                    handler=handler,
                    is_async=is_async,
                    decoder=msgspec.msgpack.Decoder(params),
                    batch=batch,
                    inline=inline,
                )
            )
            return handler

        return register

    def _add(self, method: Method) -> None:
        if method.name in self.methods:
            raise ValueError(f"method {method.name!r} registered twice")
        self.methods[method.name] = method

    def include(self, other: Router) -> None:
        for method in other.methods.values():
            self._add(method)

    def lookup(self, name: str) -> Method:
        try:
            return self.methods[name]
        except KeyError:
            raise MethodNotFound(f"no method named {name!r}") from None


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A router bound to the app its handlers serve: what a connection dispatches through.

    `group` makes one group commit (lokid.queue.unit.GroupCommit) for a batch of the
    methods marked `batch`; without it every request runs on its own."""

    router: Router
    app: Any
    group: Callable[[], Any] | None = None

    def lookup(self, name: str) -> Method:
        return self.router.lookup(name)

    def call(self, peer: Peer, msgid: int) -> Call[Any]:
        return Call(self.app, peer, msgid)
