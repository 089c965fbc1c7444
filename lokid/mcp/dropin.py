"""Loki Mode's five task tools by their own names, backed by lokid's queue.

An agent configured for Loki Mode's MCP server (mcp/server.py in Loki Mode) calls
`loki_task_queue_list`, `loki_task_queue_add`, `loki_task_queue_update`,
`loki_complete_task` and `loki_project_status` with the same parameters and reads the same
result shapes: a JSON text (as structured content, `{"result": text}`, which is what Loki
Mode's SDK makes of a tool returning a string). Loki Mode keeps these tasks in an unlocked
file of their own; here they are lokid's tasks, durable and leased, and the mapping of its
status strings and string priorities to lokid's states and 1-10 priorities is README's
"Loki Mode's tool names" table. Failures are marked `isError` besides carrying Loki Mode's
`error` key.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import mcp_types as types
import msgspec

from lokid.mcp import errors, schemas
from lokid.mcp.project import NoProject, Projects
from lokid.wire.times import iso

Call = Callable[[str, dict[str, Any]], Awaitable[Any]]

PRIORITIES = ("critical", "high", "medium", "low")
PHASES = ("discovery", "architecture", "development", "testing", "deployment")
STATUSES = ("pending", "in_progress", "completed", "blocked")
# Loki Mode's status for each lokid state; a cancelled task has none and is not listed.
STATUS_OF = {
    "pending": "pending",
    "in-progress": "in_progress",
    "completed": "completed",
    "dead-letter": "blocked",
}
# The most tasks loki_task_queue_list returns (Loki Mode's lists its whole file).
LIST_CAP = 10_000


def priority_name(level: int) -> str:
    """lokid's 1-10 as Loki Mode's name: 9-10 critical, 7-8 high, 4-6 medium, 1-3 low
    (lokid maps the names the other way to 10, 8, 5 and 3, so a name round-trips)."""
    return "critical" if level >= 9 else "high" if level >= 7 else "medium" if level >= 4 else "low"


def loki_task(task: dict[str, Any], state: str) -> dict[str, Any]:
    """A lokid task in the shape of Loki Mode's task-queue.json entries (id, title,
    description, priority, phase, status, created_at), with lokid's type and state."""
    payload = task.get("payload") or {}
    return {
        "id": task["id"],
        "title": task.get("title") or payload.get("goal") or task["type"],
        "description": task.get("description") or _text(payload.get("context")),
        "priority": priority_name(task["priority"]),
        "phase": task.get("phase") or "development",
        "status": STATUS_OF.get(state, state),
        "created_at": task["createdAt"],
        "type": task["type"],
        "state": state,
    }


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else json.dumps(value)


# -- arguments (Loki Mode's parameter names, types and defaults) --------------------------


class NoArgs(msgspec.Struct, forbid_unknown_fields=True):
    pass


class QueueAddArgs(msgspec.Struct, forbid_unknown_fields=True):
    title: str
    description: str
    priority: Literal["low", "medium", "high", "critical"] = "medium"
    phase: Literal["discovery", "architecture", "development", "testing", "deployment"] = (
        "development"
    )


class QueueUpdateArgs(msgspec.Struct, forbid_unknown_fields=True):
    task_id: str
    status: Literal["pending", "in_progress", "completed", "blocked"] | None = None
    priority: Literal["low", "medium", "high", "critical"] | None = None


class CompleteTaskArgs(msgspec.Struct, forbid_unknown_fields=True):
    completion_statement: str
    evidence: str
    confidence: str = "medium"


class Refused(Exception):
    """A drop-in call answered `{"success": false, "error": message}`."""


class DropIn:
    """The five tools for one bridge: its projects, its agent name, its lokid calls."""

    def __init__(self, projects: Projects, agent: str, call: Call) -> None:
        self.projects = projects
        self.agent = agent
        self.call = call
        self.handlers: dict[str, tuple[type, Callable[[Any], Awaitable[types.CallToolResult]]]]
        self.handlers = {
            "loki_task_queue_list": (NoArgs, self.queue_list),
            "loki_task_queue_add": (QueueAddArgs, self.queue_add),
            "loki_task_queue_update": (QueueUpdateArgs, self.queue_update),
            "loki_complete_task": (CompleteTaskArgs, self.complete_task),
            "loki_project_status": (NoArgs, self.project_status),
        }

    def tools(self) -> list[types.Tool]:
        return [
            types.Tool(
                name=name,
                description=DESCRIPTIONS[name],
                input_schema=schemas.object_schema(args),
                output_schema=RESULT_SCHEMA,
            )
            for name, (args, _) in self.handlers.items()
        ]

    async def handle(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        args_type, handler = self.handlers[name]
        try:
            self._check_choices(name, arguments)
            args = msgspec.convert(arguments, args_type)
            return await handler(args)
        except (Refused, msgspec.ValidationError) as exc:
            return _failure(name, str(exc))
        except errors.EXPECTED as exc:
            return _failure(name, errors.text(exc))

    @staticmethod
    def _check_choices(name: str, arguments: dict[str, Any]) -> None:
        """Loki Mode's own checks and messages for its string choices."""
        checks = {
            "loki_task_queue_add": (("priority", PRIORITIES), ("phase", PHASES)),
            "loki_task_queue_update": (("status", STATUSES), ("priority", PRIORITIES)),
        }.get(name, ())
        for key, allowed in checks:
            value = arguments.get(key)
            if value is not None and value not in allowed:
                raise Refused(f"{key} must be one of: {', '.join(sorted(allowed))}")
        if name == "loki_complete_task":
            for key in ("completion_statement", "evidence"):
                if not str(arguments.get(key) or "").strip():
                    raise Refused(f"{key} is required")

    # -- the tools ---------------------------------------------------------------------

    async def queue_list(self, _: NoArgs) -> types.CallToolResult:
        project = self.projects.resolve()
        listed: list[dict[str, Any]] = []
        for state in STATUS_OF:
            cursor: str | None = ""
            while cursor is not None and len(listed) < LIST_CAP:
                params = {"project": project, "state": state, "cursor": cursor or None}
                page = await self.call("queue.list", {**params, "limit": 1000})
                listed += [loki_task(task, state) for task in page["tasks"]]
                cursor = page["cursor"]
        listed.sort(key=lambda task: task["created_at"])  # Loki Mode's file: oldest first
        body: dict[str, Any] = {"tasks": listed[:LIST_CAP]}
        if len(listed) >= LIST_CAP:
            body["truncated"] = True
            body["message"] = f"the first {LIST_CAP} tasks found; queue_list pages through all"
        return _answer(body)

    async def queue_add(self, args: QueueAddArgs) -> types.CallToolResult:
        task = {
            "type": "general",
            "priority": args.priority,
            "payload": {"goal": args.title, "context": args.description},
            "title": args.title,
            "description": args.description,
            "phase": args.phase,
        }
        project = self.projects.resolve()
        added = await self.call("queue.enqueue", {"project": project, "task": task})
        return _answer({"success": True, "task_id": added["id"], "duplicate": added["duplicate"]})

    async def queue_update(self, args: QueueUpdateArgs) -> types.CallToolResult:
        project = self.projects.resolve()
        try:
            now = await self.call("queue.get", {"project": project, "id": args.task_id})
        except errors.DaemonError as exc:
            if exc.code != "not_found":
                raise
            raise Refused(f"Task {args.task_id} not found") from None
        task, state = now["task"], now["state"]
        if args.priority is not None and args.priority != priority_name(task["priority"]):
            raise Refused(
                f"lokid sets a task's priority when it is enqueued and cannot change it "
                f"(task {args.task_id} is {priority_name(task['priority'])})"
            )
        if args.status is not None:
            await self._move(project, args.task_id, state, args.status)
            now = await self.call("queue.get", {"project": project, "id": args.task_id})
        return _answer({"success": True, "task": loki_task(now["task"], now["state"])})

    async def _move(self, project: str, task_id: str, state: str, status: str) -> None:
        """Carry out a status change the way lokid can (README's table), or refuse it."""
        if STATUS_OF.get(state) == status:
            return
        base = {"project": project, "id": task_id}
        held = {**base, "agent": self.agent}
        via = "through loki_task_queue_update"
        if (state, status) == ("dead-letter", "pending"):
            await self.call("dlq.retry", {**base, "note": f"back to pending {via}"})
        elif (state, status) == ("in-progress", "pending"):
            await self.call("queue.fail", {**held, "error": f"returned to the queue {via}"})
        elif (state, status) == ("in-progress", "blocked"):
            await self.call("queue.fail", {**held, "error": f"blocked ({via})"})
        elif (state, status) == ("in-progress", "completed"):
            report = {"statement": f"marked completed {via}", "agent": self.agent}
            await self.call("queue.complete", {**held, "result": {"decisionReport": report}})
        elif (state, status) == ("pending", "in_progress"):
            raise Refused(
                f"lokid hands out tasks by priority and lease: call queue_claim with "
                f"capabilities naming this task's type to take the next task of that type "
                f"(task {task_id} is pending)"
            )
        else:
            raise Refused(f"lokid cannot move task {task_id} from {state} to {status}")

    async def complete_task(self, args: CompleteTaskArgs) -> types.CallToolResult:
        confidence = args.confidence.strip().lower()
        if confidence not in ("high", "medium", "low"):
            confidence = "medium"
        claim = {
            "statement": args.completion_statement.strip(),
            "evidence": args.evidence.strip(),
            "confidence": confidence,
        }
        project = self.projects.resolve()
        completed = await self._complete_held(project, claim)
        try:
            _record_claim(Path(project), claim)
        except OSError as exc:
            raise Refused(f"cannot record the claim in {project}/.loki: {exc}") from exc
        return _answer(
            {
                "recorded": True,
                "path": ".loki/events.jsonl",
                "signal": ".loki/signals/TASK_COMPLETION_CLAIMED",
                "confidence": confidence,
                "completed": completed,
            }
        )

    async def _complete_held(self, project: str, claim: dict[str, str]) -> list[str]:
        """Complete every task this agent holds, the claim as its decision report."""
        held, cursor = [], None
        while True:
            page = await self.call(
                "queue.list", {"project": project, "state": "in-progress", "cursor": cursor}
            )
            held += [t["id"] for t in page["tasks"] if t.get("claimedBy") == self.agent]
            cursor = page["cursor"]
            if cursor is None:
                break
        for task_id in held:
            params = {"project": project, "id": task_id, "agent": self.agent}
            await self.call("queue.complete", {**params, "result": {"decisionReport": claim}})
        return held

    async def project_status(self, _: NoArgs) -> types.CallToolResult:
        try:
            project = self.projects.resolve()
        except NoProject as exc:
            return _answer({"status": "no_project", "message": f"No active project found: {exc}"})
        st = await self.call("project.status", {"project": project})
        counts = st["queue"] or {}
        body: dict[str, Any] = {
            "project": {
                "path": st["path"],
                "name": st["name"],
                "paused": st["paused"],
                "stopping": st["stopping"],
                "signals": st["signals"],
                "run": st["run"],
            },
            "tasks": {
                "total": sum(n for state, n in counts.items() if state != "cancelled"),
                "pending": counts.get("pending", 0),
                "in_progress": counts.get("in-progress", 0),
                "completed": counts.get("completed", 0),
                "blocked": counts.get("dead-letter", 0),
            },
        }
        if st["dashboard"] is not None:
            body["orchestrator"] = st["dashboard"]
        return _answer(body)


def _record_claim(project: Path, claim: dict[str, str]) -> None:
    """What Loki Mode's own tool leaves for its runner, which stops iterating on it: the
    claim appended to .loki/events.jsonl and written to .loki/signals/
    TASK_COMPLETION_CLAIMED (atomically: the runner never reads half of it)."""
    loki = project / ".loki"
    if not loki.is_dir():
        raise OSError(f"{loki} is not a folder")
    now = iso(time.time())
    payload = {"type": "task_completion_claim", **claim, "timestamp": now}
    line = json.dumps({"timestamp": now, "type": "task_completion_claim", "data": payload})
    fd = os.open(
        loki / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644
    )
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
    signals = loki / "signals"
    signals.mkdir(exist_ok=True)
    tmp = signals / f".TASK_COMPLETION_CLAIMED.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, json.dumps(payload, indent=2).encode())
    finally:
        os.close(fd)
    os.replace(tmp, signals / "TASK_COMPLETION_CLAIMED")


def _failure(name: str, message: str) -> types.CallToolResult:
    """Each tool's own failure shape in Loki Mode, marked as an error result."""
    if name in ("loki_task_queue_add", "loki_task_queue_update"):
        return _answer({"success": False, "error": message}, True)
    if name == "loki_task_queue_list":
        return _answer({"error": message, "tasks": []}, True)
    return _answer({"error": message}, True)


def _answer(body: dict[str, Any], is_error: bool = False) -> types.CallToolResult:
    text = json.dumps(body, default=str)
    return types.CallToolResult(
        content=[types.TextContent(text=text)],
        structured_content={"result": text},
        is_error=is_error,
    )


# What Loki Mode's SDK (FastMCP) publishes for a tool that returns a string.
RESULT_SCHEMA = {
    "type": "object",
    "properties": {"result": {"title": "Result", "type": "string"}},
    "required": ["result"],
}

DESCRIPTIONS = {
    "loki_task_queue_list": (
        "List the project's tasks (Loki Mode's task tool, backed by lokid's queue): "
        "a JSON text {tasks: [{id, title, description, priority, phase, status, "
        "created_at, type, state}]}; status is pending, in_progress, completed or blocked "
        "(dead-lettered)."
    ),
    "loki_task_queue_add": (
        "Add a task (Loki Mode's task tool, backed by lokid's queue, type general). "
        "priority: low, medium, high or critical; phase: discovery, architecture, "
        "development, testing or deployment. Returns {success, task_id}."
    ),
    "loki_task_queue_update": (
        "Change a task's status (Loki Mode's task tool, backed by lokid's queue). lokid "
        "hands tasks out by priority and lease, so: in_progress is taken with queue_claim; "
        "completed completes a task you hold (queue_complete takes a real decision report); "
        "pending gives a held task back (counts an attempt) or retries a dead-lettered one; "
        "blocked fails a held task. A priority cannot change after enqueue. Returns "
        "{success, task} or {success: false, error}."
    ),
    "loki_complete_task": (
        "Declare the current work complete (Loki Mode's completion claim): completes every "
        "task this session holds in lokid's queue with the statement, evidence and "
        "confidence as its decision report, and records the claim where Loki Mode's runner "
        "looks for it (.loki/signals/TASK_COMPLETION_CLAIMED, .loki/events.jsonl). "
        "confidence: high, medium or low."
    ),
    "loki_project_status": (
        "The project's status (Loki Mode's tool, from lokid): {project, orchestrator (Loki "
        "Mode's dashboard state, when present), tasks: {total, pending, in_progress, "
        "completed, blocked}}, or {status: no_project}."
    ),
}
