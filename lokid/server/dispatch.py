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

from lokid.errors import InvalidParams, MethodNotFound
from lokid.hub import Subscriber
from lokid.wire.daemon import Empty, Event
from lokid.wire.messages import UNDECODABLE

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


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    params: type
    handler: Callable[[Call[Any], Any], Any]
    is_async: bool
    decoder: msgspec.msgpack.Decoder

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

    def method(self, name: str, params: type = Empty) -> Callable[[Callable], Callable]:
        def register(handler: Callable) -> Callable:
            self._add(
                Method(
                    name=name,
                    params=params,
                    handler=handler,
                    is_async=inspect.iscoroutinefunction(handler),
                    decoder=msgspec.msgpack.Decoder(params),
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
    """A router bound to the app its handlers serve: what a connection dispatches through."""

    router: Router
    app: Any

    def lookup(self, name: str) -> Method:
        return self.router.lookup(name)

    def call(self, peer: Peer, msgid: int) -> Call[Any]:
        return Call(self.app, peer, msgid)
