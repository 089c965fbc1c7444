"""What a changed path under `.loki/` means. Pure: a relative path in, a kind out."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    STOP = "stop"
    PAUSE = "pause"
    PAUSE_AT_CHECKPOINT = "pause-at-checkpoint"
    SIGNAL = "signal"  # .loki/signals/<NAME>
    PENDING = "pending"  # queue/pending.json
    BREAKER_CONFIG = "breaker-config"
    PRD = "prd"  # generated-prd.md or state/prd-signature.json
    RUN_FILE = "run-file"  # docker/run.json
    EVENTS_LOG = "events-log"  # events.jsonl
    DASHBOARD = "dashboard"  # dashboard-state.json
    QUEUE_FILE = "queue-file"  # queue/<state>.json other than pending.json (name: the file)
    RUN_PID = "run-pid"  # loki.pid or run.pid: a Loki Mode run started or ended
    FOLDER = "folder"  # a folder that holds any of the above, e.g. config/ or signals/


_EXACT = {
    ("STOP",): Kind.STOP,
    ("PAUSE",): Kind.PAUSE,
    ("PAUSE_AT_CHECKPOINT",): Kind.PAUSE_AT_CHECKPOINT,
    ("queue", "pending.json"): Kind.PENDING,
    ("config", "circuit-breakers.yaml"): Kind.BREAKER_CONFIG,
    ("generated-prd.md",): Kind.PRD,
    ("docker", "run.json"): Kind.RUN_FILE,
    ("events.jsonl",): Kind.EVENTS_LOG,
    ("dashboard-state.json",): Kind.DASHBOARD,
    ("loki.pid",): Kind.RUN_PID,
    ("run.pid",): Kind.RUN_PID,
}
# Loki Mode's queue files that lokid shares besides pending.json: when someone else writes
# one, lokid merges its own entries back in (their writers may have dropped them).
QUEUE_FILES = frozenset(
    {"in-progress.json", "completed.json", "failed.json", "dead-letter.json", "cancelled.json"}
)


# Folders whose files matter, each watched on its own (not recursively). A folder's
# creation means "watch it and look inside": inotify reports nothing written into it
# before its watch is in place.
FOLDERS = frozenset(parts[0] for parts in _EXACT if len(parts) > 1) | {"signals"}

# `.loki/state/` is not watched: it holds lokid's own database, and a watch there would
# wake the watcher on every commit (measured: a claim's commit took 38 us instead of 16).
# Its one file of interest is polled by the prober instead.
POLLED = {("state", "prd-signature.json"): Kind.PRD}

FILES = (*_EXACT, *POLLED, *(("queue", name) for name in sorted(QUEUE_FILES)))
# (every file with a meaning, besides those in signals/)


@dataclass(frozen=True, slots=True)
class Meaning:
    kind: Kind
    name: str | None = None  # the signal's file name, for Kind.SIGNAL


def classify(parts: tuple[str, ...]) -> Meaning | None:
    """`parts` is the path relative to `.loki/`, split; None for paths lokid ignores."""
    kind = _EXACT.get(parts) or POLLED.get(parts)
    if kind is not None:
        return Meaning(kind)
    if len(parts) == 2 and parts[0] == "signals" and _plain(parts[1]):
        return Meaning(Kind.SIGNAL, parts[1])
    if len(parts) == 2 and parts[0] == "queue" and parts[1] in QUEUE_FILES:
        return Meaning(Kind.QUEUE_FILE, parts[1])
    if len(parts) == 1 and parts[0] in FOLDERS:
        return Meaning(Kind.FOLDER, parts[0])
    return None


def inside(folder: str, names: list[str]) -> list[tuple[tuple[str, ...], Meaning]]:
    """What the files now in `folder` mean (for a folder that just appeared)."""
    out = []
    for name in sorted(names):
        meaning = classify((folder, name))
        if meaning is not None and meaning.kind is not Kind.FOLDER:
            out.append(((folder, name), meaning))
    return out


def _plain(name: str) -> bool:
    """Signal files, not editors' and tools' temporary files beside them."""
    return not (name.startswith(".") or name.endswith(("~", ".tmp", ".swp", ".lock")))


def signal_topic(name: str) -> str:
    """`BUDGET_EXCEEDED` -> `signal.budget-exceeded` (events are area.verb, lower case)."""
    return "signal." + name.removesuffix(".json").lower().replace("_", "-")
