"""The daemon's settings: command line first, then `LOKID_*` environment, then defaults.

Every value is checked where it is read: a bad one stops `lokid serve` with one line naming
the variable (or option), the value and what would be valid, never a traceback and never a
silent default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from lokid.errors import StartupError
from lokid.wire.framing import DEFAULT_MAX_FRAME

Durability = Literal["normal", "full"]
LOG_LEVELS = ("debug", "info", "warning", "error")
DURABILITIES = ("normal", "full")


class BadSetting(StartupError):
    """A setting's value is not valid; the message names it and the valid values."""


class Settings(msgspec.Struct, kw_only=True):
    socket: Path
    state_dir: Path
    log_level: str = "info"
    max_frame: int = DEFAULT_MAX_FRAME
    # Per-connection bytes queued for a client that does not read. Replies past it
    # make the producer wait; events past it are dropped and followed by `resync`.
    outbox_limit: int = 4 * 1024 * 1024
    # Bytes queued for all clients together. Past it events are refused for every client
    # with a backlog (each gets a `resync`), and the slowest readers are disconnected.
    outbox_total: int = 64 * 1024 * 1024
    # Requests one connection may have running at once before the reader pauses.
    max_inflight: int = 64
    # Microseconds a connection polls for its client's next request before parking
    # in epoll (see Connection._spin_recv); 0 turns busy-polling off.
    spin_us: float = 50.0
    # How long SIGTERM waits for in-flight requests before cancelling them.
    shutdown_grace: float = 5.0
    # SQLite synchronous mode: `normal` survives a lokid crash, `full` an OS crash.
    durability: Durability = "normal"
    # Tasks kept in the completed.json view (the database keeps them all).
    completed_keep: int = 500
    # Quiet time that coalesces a burst of queue changes into one view rewrite.
    view_delay: float = 0.05
    # watchfiles: a batch of changes is handed over after `step` ms without a new one,
    # or after `debounce` ms at most while changes keep coming.
    watch_step_ms: int = 5
    watch_debounce_ms: int = 200
    # After .loki/STOP appears, how long Loki Mode inside the container gets to end by
    # itself before lokid stops the run.
    stop_file_grace: float = 10.0
    # When lokid stops a container: seconds between SIGTERM and SIGKILL.
    container_stop_grace: float = 10.0
    # Where queues live unless a project says otherwise: "" or "sqlite" (each project's own
    # .loki/lokid/lokid.db), or a postgresql:// URL (lokid/store/choice.py). From the
    # environment only: a URL may hold a password, and command lines are public.
    store: str = ""


# -- parsing one value ---------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def size(text: str) -> int:
    """Bytes: `16777216`, `16MiB`, `16M`, `512k`."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError("a size in bytes, like 16777216, 16MiB or 512k")
    unit = (match.group(2) or "").lower()[:1]
    return int(match.group(1)) * _UNITS[unit]


def seconds(text: str) -> float:
    """A duration: a number of seconds >= 0 (and under a year)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError("a number of seconds >= 0, like 10 or 0.5") from None
    if not 0 <= value < 366 * 86400:
        raise ValueError("a number of seconds >= 0 (and under a year)")
    return value


def microseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("a number of microseconds >= 0, like 50 (0: off)") from None
    if not 0 <= value <= 1_000_000:
        raise ValueError("a number of microseconds from 0 to 1000000")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("a whole number, like 500") from None
    if value < 0:
        raise ValueError("a whole number, 0 or more")
    return value


def store_url(text: str) -> str:
    from lokid.store.choice import check_url

    check_url(text, "LOKID_STORE")
    return text.strip()


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return value

    return parse


# field -> (environment variable, older names still read, parser)
ENVIRONMENT: dict[str, tuple[str, tuple[str, ...], Callable[[str], Any]]] = {
    "log_level": ("LOKID_LOG_LEVEL", (), one_of(*LOG_LEVELS)),
    "max_frame": ("LOKID_MAX_FRAME", (), size),
    "outbox_limit": ("LOKID_OUTBOX_LIMIT", (), size),
    "outbox_total": ("LOKID_OUTBOX_TOTAL", (), size),
    "spin_us": ("LOKID_SPIN_US", (), microseconds),
    "shutdown_grace": ("LOKID_SHUTDOWN_GRACE", (), seconds),
    "durability": ("LOKID_DURABILITY", (), one_of(*DURABILITIES)),
    "completed_keep": ("LOKID_COMPLETED_KEEP", (), count),
    "view_delay": ("LOKID_VIEW_DELAY", (), seconds),
    "watch_step_ms": ("LOKID_WATCH_STEP_MS", (), count),
    "watch_debounce_ms": ("LOKID_WATCH_DEBOUNCE_MS", (), count),
    "stop_file_grace": ("LOKID_STOP_FILE_GRACE", ("LOKID_STOP_SIGNAL_GRACE",), seconds),
    "container_stop_grace": ("LOKID_CONTAINER_STOP_GRACE", ("LOKID_STOP_GRACE",), seconds),
    "store": ("LOKID_STORE", (), store_url),
}


UNSHOWN = frozenset({"LOKID_STORE"})  # values never repeated in a message


def parse(name: str, value: str, parser: Callable[[str], Any]) -> Any:
    """One value, or `BadSetting` naming `name` (a variable or an option)."""
    try:
        return parser(value)
    except ValueError as exc:
        shown = "(not shown: it may hold a password)" if name in UNSHOWN else repr(value)
        raise BadSetting(f"{name}={shown} is not valid: expected {exc}") from exc


def from_environment(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given in `env`, checked."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for field, (name, older, parser) in ENVIRONMENT.items():
        for var in (name, *older):
            if env.get(var, "") != "":
                values[field] = parse(var, env[var], parser)
                break
    return values


def load(
    socket: Path, state_dir: Path, given: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> Settings:
    """Options given on the command line win over the environment, which wins over defaults."""
    values = from_environment(env)
    values.update({k: v for k, v in given.items() if v is not None})
    return Settings(socket=socket, state_dir=state_dir, **values)
