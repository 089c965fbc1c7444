"""`--json=FIELDS` (gh's field selection) and `--jq EXPR`: only for the runs that ask."""

from __future__ import annotations

import sys
from typing import Any

import msgspec


class Failure(ValueError):
    """A selection that cannot be made (lokictl._base turns it into its usage error)."""


LIST_KEYS = ("tasks", "projects", "runs", "results", "cancelled")


def _dig(value: Any, field: str) -> Any:
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _flatten(value: dict[str, Any]) -> dict[str, Any]:
    """`{task, state}` (queue get/claim) read as one task with its state."""
    if isinstance(value.get("task"), dict):
        return {**value["task"], **{k: v for k, v in value.items() if k != "task"}}
    return value


def pick(value: Any, fields: list[str]) -> Any:
    """Only `fields` (dotted paths) of a result: of each item when it is a listing,
    as gh's `--json FIELDS` does. An unknown field is a usage error naming the known."""
    if isinstance(value, list):
        return [pick(item, fields) for item in value]
    if not isinstance(value, dict):
        return value
    flat = _flatten(value)
    if not any(f.split(".")[0] in flat for f in fields):
        lists = [k for k in LIST_KEYS if isinstance(value.get(k), list)]
        if len(lists) == 1:
            return pick(value[lists[0]], fields)
    known = set(flat)
    unknown = [f for f in fields if f.split(".")[0] not in known]
    if unknown and flat:
        raise Failure(f"unknown JSON field {unknown[0]!r}; available: {', '.join(sorted(known))}")
    return {f: _dig(flat, f) for f in fields}


def through_jq(expr: str, value: Any) -> None:
    """`--jq EXPR` as gh has it, through the jq program (an argv list, never a shell)."""
    import shutil
    import subprocess

    jq = shutil.which("jq")
    if jq is None:
        raise Failure("--jq needs the jq program on PATH (or use --json=FIELDS)")
    sys.stdout.flush()
    done = subprocess.run(
        [jq, "-r", expr], input=msgspec.json.encode(value).decode(), text=True, check=False
    )
    if done.returncode != 0:
        raise Failure(f"jq rejected the expression {expr!r}")
