"""The daemon's settings: command line first, then `LOKID_*` environment, then defaults."""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec

from lokid.wire.framing import DEFAULT_MAX_FRAME

Durability = Literal["normal", "full"]


class Settings(msgspec.Struct, kw_only=True):
    socket: Path
    state_dir: Path
    log_level: str = "info"
    max_frame: int = DEFAULT_MAX_FRAME
    # Per-connection bytes queued for a client that does not read. Replies past it
    # make the producer wait; events past it are dropped and followed by `resync`.
    outbox_limit: int = 4 * 1024 * 1024
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
    # After .loki/STOP appears, how long Loki Mode inside the container gets to exit
    # by itself before lokid stops the run.
    stop_signal_grace: float = 10.0


def env_default(name: str, default: str, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get(f"LOKID_{name}", default)
