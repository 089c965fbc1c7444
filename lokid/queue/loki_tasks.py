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

# Keys of Loki Mode's own task files that describe state lokid owns; not kept as extras.
_OWNED_EXTRAS = frozenset({"status"})


def task_doc(task: Task) -> bytes:
    """A task as stored: its JSON document."""
    return _encode(task)


def encode_extras(extras: dict[str, Any]) -> bytes | None:
    return _encode(extras) if extras else None


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


def from_loki(entry: dict[str, Any], known: dict[str, str]) -> dict[str, Any]:
    """A task as Loki Mode's tools write it, made acceptable to `queue.enqueue`.

    Missing type becomes `general`; string priorities are mapped; dependencies on
    tasks lokid has never seen are dropped (an import must not lose the task).
    """
    task = dict(entry)
    with contextlib.suppress(ValueError):  # a bad one is left for the enqueue to report
        task["priority"] = normalize_priority(entry.get("priority"))
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
        task["idempotencyKey"] = idempotency_key({"id": entry["id"], **task["payload"]})
    return task


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
