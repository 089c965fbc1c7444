"""Method routing: a name, its params type, and its handler.

Each area module (`lokid.methods.*`) owns a `Router`; the daemon merges them.
A handler is `(call, params) -> result`, sync or async. Sync handlers run
inline on the reader (no task to spawn; they must not block). Async ones run
as tasks, concurrently, cancellable with `$/cancel`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from lokid.errors import InvalidParams, MethodNotFound
from lokid.wire.daemon import Empty
from lokid.wire.messages import UNDECODABLE

if TYPE_CHECKING:
    from lokid.daemon import Daemon
    from lokid.server.connection import Connection


@dataclass(slots=True)
class Call:
    """What a handler knows about the request it serves."""

    daemon: Daemon
    conn: Connection
    msgid: int


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    params: type
    handler: Callable[[Call, Any], Any]
    is_async: bool
    decoder: msgspec.msgpack.Decoder

    def decode_params(self, raw: bytes) -> Any:
        try:
            return self.decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise InvalidParams(f"{self.name}: {exc}") from None
        except UNDECODABLE as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise InvalidParams(f"{self.name}: params are not valid msgpack: {why}") from None


class Router:
    def __init__(self) -> None:
        self.methods: dict[str, Method] = {}

    def method(self, name: str, params: type = Empty) -> Callable[[Callable], Callable]:
        def register(handler: Callable) -> Callable:
            if name in self.methods:
                raise ValueError(f"method {name!r} registered twice")
            self.methods[name] = Method(
                name=name,
                params=params,
                handler=handler,
                is_async=inspect.iscoroutinefunction(handler),
                decoder=msgspec.msgpack.Decoder(params),
            )
            return handler

        return register

    def include(self, other: Router) -> None:
        for name, method in other.methods.items():
            if name in self.methods:
                raise ValueError(f"method {name!r} registered twice")
            self.methods[name] = method

    def lookup(self, name: str) -> Method:
        try:
            return self.methods[name]
        except KeyError:
            raise MethodNotFound(f"no method named {name!r}") from None
