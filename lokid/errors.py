"""Every exception lokid raises, in one tree; each one that reaches a client carries its code.

    LokidError                    internal     (anything a reply can carry)
    ├── InvalidRequest            invalid_request
    ├── ParseError                parse_error
    ├── MethodNotFound            method_not_found
    ├── InvalidParams             invalid_params
    │   └── ConfigError           invalid_params  a config file rejected (key and line named)
    ├── NotFound                  not_found
    ├── Conflict                  conflict        a transition not allowed now
    ├── Unavailable               unavailable     a dependency is down, a file cannot be used
    │   ├── LockTimeout           unavailable     another tool held a lock too long
    │   ├── StoreUnavailable      unavailable     the state database is gone, replaced or broken
    │   └── EngineDown            unavailable     the Docker engine did not answer
    ├── Cancelled                 cancelled
    └── TooLarge                  too_large       (wire.FrameTooLarge is the framing's own)

    BadFile                       a Loki Mode file that does not parse (quarantined, never sent)

    StartupError                  `lokid serve` refuses to start; printed, exit 1
    ├── UnsafePath                a socket folder or path lokid will not use
    ├── AlreadyRunning            another lokid serves that socket
    └── ActivationError           a socket from systemd/launchd that cannot be used
        └── LaunchdError

Handlers raise these; `wire_error` turns any exception into the error of a reply, so an
exception that is not a `LokidError` becomes `internal` with a short id that is also logged,
never a traceback. Adapters translate library errors once, at the edge, keeping the cause
(`raise Unavailable(...) from exc`). Background work reports its failures through `guarded`.

Light on purpose (the standard library and the wire's codes): `lokid.paths`, which lokictl
imports, raises `UnsafePath`.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from lokid.wire.codes import ErrorCode

log = logging.getLogger("lokid.errors")


class LokidError(Exception):
    code: ErrorCode = "internal"

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class InvalidRequest(LokidError):
    code = "invalid_request"


class ParseError(LokidError):
    code = "parse_error"


class MethodNotFound(LokidError):
    code = "method_not_found"


class InvalidParams(LokidError):
    code = "invalid_params"


class ConfigError(InvalidParams):
    """A configuration file was rejected; the message names the file, key and line."""


class NotFound(LokidError):
    code = "not_found"


class Conflict(LokidError):
    code = "conflict"


class Unavailable(LokidError):
    code = "unavailable"


class LockTimeout(Unavailable):
    """Another tool held a lock for longer than we wait; try again later."""


class QueueBusy(Unavailable):
    """The project's queue is inside a bulk enqueue's transaction. Batched requests wait
    for it (the batcher defers them); others are answered with this."""

    def __init__(self, message: str, data: Any = None, queue: Any = None) -> None:
        super().__init__(message, data)
        self.queue = queue


class StoreUnavailable(Unavailable):
    """A project's database cannot be used (gone, replaced, corrupt, newer schema)."""


class EngineDown(Unavailable):
    """The Docker engine did not answer (the message names the endpoint)."""


class Cancelled(LokidError):
    code = "cancelled"


class TooLarge(LokidError):
    code = "too_large"


class BadFile(Exception):
    """A Loki Mode file that does not parse; lokid quarantines it and says so in an event."""


class StartupError(Exception):
    """`lokid serve` cannot start; the message says why and what to do."""


class UnsafePath(StartupError):
    """A socket or state path that lokid refuses to use."""


class AlreadyRunning(StartupError):
    """Another lokid already serves this socket path."""


class ActivationError(StartupError):
    """A socket handed over by a service manager that cannot be used."""


class LaunchdError(ActivationError):
    """launchd's `launch_activate_socket` failed; `code` is its errno."""

    def __init__(self, code: int, name: str) -> None:
        super().__init__(f"launch_activate_socket({name!r}): {os.strerror(code)}")
        self.code = code


def unavailable_file(what: str, exc: OSError) -> Unavailable:
    """An OS error on lokid's own files (read-only, disk full) as a clear client error."""
    return Unavailable(f"cannot {what}: {exc.strerror or exc}", {"errno": exc.errno})


def internal_id(exc: BaseException, where: str) -> str:
    """Log the traceback under a short id; the id is all a client gets."""
    error_id = secrets.token_hex(4)
    log.error("internal error %s in %s", error_id, where, exc_info=exc)
    return error_id


def wire_error(exc: BaseException, where: str) -> tuple[ErrorCode, str, Any]:
    """(code, message, data) of the reply an exception becomes: the only place that decides."""
    if isinstance(exc, LokidError):
        return exc.code, exc.message, exc.data
    error_id = internal_id(exc, where)
    return "internal", f"internal error (id {error_id}); see the lokid log", None


async def guarded(what: str, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
    """Run background work whose failure must not take the daemon down: a `LokidError` is
    an expected outside failure (one line), anything else a bug (traceback)."""
    try:
        await fn(*args)
    except LokidError as exc:
        log.warning("%s: %s", what, exc.message)
    except Exception:
        log.exception("%s failed", what)
