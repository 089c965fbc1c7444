"""JSON Schemas for the tools, derived from the wire's own msgspec types.

The schemas an agent is shown come from the Structs lokid decodes requests into and
encodes replies from (`lokid/wire/*.py`), through `msgspec.json.schema`, so they cannot
drift from the wire. Where a wire type leaves a slot free-form (`task: Any`, `result:
dict`), a subclass below types it with the wire's own `Task`, `NewTask` or `TaskResult`;
every other field, bound and default is inherited.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any

import msgspec

from lokid.wire.queue import (
    ClaimResult,
    CompleteParams,
    DlqList,
    EnqueueManyParams,
    EnqueueParams,
    NewTask,
    Task,
    TaskPage,
    TaskResult,
    TaskState,
)

# -- the wire's params with their free-form slots typed ------------------------------------


class EnqueueInput(EnqueueParams, kw_only=True):
    task: NewTask


class EnqueueManyInput(EnqueueManyParams, kw_only=True):
    tasks: Annotated[list[NewTask], msgspec.Meta(max_length=100_000)]


class CompleteInput(CompleteParams, kw_only=True):
    result: TaskResult


# -- the wire's results with their tasks typed ---------------------------------------------


class ClaimReply(ClaimResult, omit_defaults=True):
    task: Task | None


class TaskReply(TaskState, omit_defaults=True):
    task: Task
    next: ClaimReply | None = None


class TaskPageReply(TaskPage):
    tasks: list[Task]


class DlqReply(DlqList):
    tasks: list[Task]


# -- schema shaping --------------------------------------------------------------------------


def object_schema(struct: type) -> dict[str, Any]:
    """The Struct's schema with its own definition at the root (MCP wants `type: object`
    there), the definitions it refers to under `$defs`."""
    schema = msgspec.json.schema(struct)
    defs: dict[str, Any] = schema.pop("$defs", {})
    name = schema["$ref"].rsplit("/", 1)[1]
    root = dict(defs[name])
    if f'"#/$defs/{name}"' not in json.dumps(defs):  # refers to itself: keep its definition
        del defs[name]
    if defs:
        root["$defs"] = defs
    return root


def input_schema(
    params: type,
    *,
    optional: Iterable[str] = (),
    omit: Iterable[str] = (),
    described: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The params' schema as a tool takes it: `omit` left out (the bridge never sends
    them), `optional` no longer required (the bridge fills them in), descriptions added."""
    schema = object_schema(params)
    properties = schema["properties"]
    for name in omit:
        properties.pop(name, None)
    skip = set(optional) | set(omit)
    required = [name for name in schema.get("required", []) if name not in skip]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    for name, text in (described or {}).items():
        properties[name] = {**properties[name], "description": text}
    return schema


def output_schema(result: type) -> dict[str, Any]:
    return object_schema(result)
