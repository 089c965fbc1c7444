"""Tasks in Loki Mode's own shapes: what its tools write into the queue files, what a client
may give `queue.enqueue`, and the breakers' state file.

A task Loki Mode's tools wrote may carry fields lokid does not own (`title`, `description`,
`acceptance_criteria`, ...): they are kept beside the task as its *extra* fields and given
back wherever the task is shown, so nothing Loki Mode wrote is lost.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec

from lokid.domain.queue import idempotency_key, normalize_priority
from lokid.errors import InvalidParams
from lokid.wire.breakers import BreakerState
from lokid.wire.queue import NEW_TASK_FIELDS, TASK_FIELDS, NewTask, Task

_encode = msgspec.json.Encoder().encode
decode_task = msgspec.json.Decoder(Task).decode

# Keys of Loki Mode's own task files that describe state lokid owns, or that lokid's files
# set on its entries: not kept as extras (a view writes them afresh).
_OWNED_EXTRAS = frozenset({"status", "managedBy", "lokidPriority"})


def task_doc(task: Task, where: str = "task") -> bytes:
    """A task as stored: its JSON document (`InvalidParams` for what JSON cannot hold)."""
    try:
        return _encode(task)
    except (TypeError, msgspec.EncodeError, OverflowError) as exc:
        raise InvalidParams(f"{where}: {_unencodable(exc)}") from exc


def encode_extras(extras: dict[str, Any], where: str = "task") -> bytes | None:
    if not extras:
        return None
    try:
        return _encode(extras)
    except (TypeError, msgspec.EncodeError, OverflowError) as exc:
        raise InvalidParams(f"{where}: {_unencodable(exc)}") from exc


def _unencodable(exc: Exception) -> str:
    return f"not something a JSON task can hold (map keys must be strings): {exc}"


def wire_task(task: Task, extra: bytes | None) -> Any:
    """A task as clients see it: the Task, plus any extra fields Loki Mode's files gave it."""
    if not extra:
        return task
    return {**msgspec.json.decode(extra), **msgspec.to_builtins(task)}


def parse_new_task(raw: dict[str, Any], where: str) -> tuple[NewTask, dict[str, Any]]:
    """A client's task map: the fields lokid knows, and the rest kept as extras."""
    try:
        new = msgspec.convert(raw, NewTask)
    except msgspec.ValidationError as exc:
        raise InvalidParams(f"{where}: {exc}") from exc
    extras = {
        k: v
        for k, v in raw.items()
        if k not in NEW_TASK_FIELDS and k not in TASK_FIELDS and k not in _OWNED_EXTRAS
    }
    return new, extras


def priority(value: int | str, where: str) -> int:
    try:
        return normalize_priority(value)
    except ValueError as exc:
        raise InvalidParams(f"{where}: {exc}") from exc


def from_loki(entry: dict[str, Any], known: dict[str, str]) -> tuple[dict[str, Any], str | None]:
    """A task as Loki Mode's tools write it, made acceptable to `queue.enqueue`, and its
    priority as Loki Mode wrote it when that was a name (`"high"`), which its files keep.

    Missing type becomes `general`; string priorities are mapped; dependencies on
    tasks lokid has never seen are dropped (an import must not lose the task).
    """
    task = dict(entry)
    given = entry.get("priority")
    loki_priority = given if isinstance(given, str) and given.strip() else None
    with contextlib.suppress(ValueError):  # a bad one is left for the enqueue to report
        task["priority"] = normalize_priority(given)
    task.setdefault("type", "general")
    if not isinstance(task.get("type"), str) or not task["type"]:
        task["type"] = "general"
    if not isinstance(task.get("payload"), dict):
        task["payload"] = {k: v for k, v in entry.items() if k in ("title", "description")}
    deps = task.get("dependencies")
    task["dependencies"] = [d for d in deps if d in known] if isinstance(deps, list) else []
    if not isinstance(task.get("idempotencyKey"), str) and isinstance(entry.get("id"), str):
        # The id is what makes an import idempotent; two Loki tasks with equal
        # payloads but different ids are different tasks.
        with contextlib.suppress(ValueError):  # a payload JSON cannot hold: _add says so
            task["idempotencyKey"] = idempotency_key({"id": entry["id"], **task["payload"]})
    return task, loki_priority


class _FileBreaker(msgspec.Struct, rename="camel"):
    state: str
    failures: int
    last_failure: str | None
    opened_at: str | None
    half_open_at: str | None


def breakers_file(listing: dict[str, BreakerState]) -> bytes:
    """`.loki/state/circuit-breakers.json`, in the reference's shape."""
    body = {
        "circuitBreakers": {
            t: _FileBreaker(b.state, b.failures, b.last_failure, b.opened_at, b.half_open_at)
            for t, b in listing.items()
        }
    }
    return _encode(body)
