"""lokictl queue ..., dlq ..., breakers ...: the task queue from the shell."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from lokictl._base import (
    EXIT_ERROR,
    NOT_A_PROJECT,
    Failure,
    check_project,
    cwd,
    init_project,
    json_text,
    out,
)
from lokictl._client import Client
from lokictl._look import Clock, Style, clock_for, span, style_for

# Shell completion of task ids: asked of a running lokid (never started for it), as
# shtab's `.complete` format.
TASK_IDS = {
    "bash": "_lokictl_task_ids",
    "zsh": "($(lokictl __complete tasks 2>/dev/null))",
    "fish": "(lokictl __complete tasks 2>/dev/null)",
}
STATES = ("pending", "in-progress", "completed", "dead-letter", "cancelled")
PRIORITY_NAMES = {"critical": 10, "high": 8, "medium": 5, "normal": 5, "low": 3}
VALID_PRIORITIES = f"1-10 or {', '.join(PRIORITY_NAMES)}"


def _json_arg(text: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _json_object(text: str) -> Any:
    value = _json_arg(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object ({{...}}), got {text!r}")
    return value


def priority(text: str) -> int | str:
    """1-10 or a name; anything else is refused with the valid values."""
    word = text.strip().lower()
    if word in PRIORITY_NAMES:
        return word
    if word.isdigit() and 1 <= int(word) <= 10:
        return int(word)
    raise argparse.ArgumentTypeError(f"invalid priority {text!r} (valid: {VALID_PRIORITIES})")


def words(text: str) -> list[str]:
    """`a,b` and `a` alike: comma-separated values, each repeatable."""
    items = [w.strip() for w in text.split(",") if w.strip()]
    if not items:
        raise argparse.ArgumentTypeError("needs at least one value")
    return items


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1, got {text!r}")
    return int(text)


def add_queue_commands(sub: Any) -> None:
    from lokictl._command import command

    def cmd(parent: Any, name: str, text: str, examples: str = "") -> argparse.ArgumentParser:
        return command(parent, name, text, examples, where="required")

    queue = cmd(sub, "queue", "the task queue of the project")
    q = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = cmd(
        q,
        "add",
        "enqueue a task (or --file of many, in one transaction)",
        '  lokictl queue add eng-backend --priority high --payload \'{"action": "implement"}\'\n'
        "  lokictl queue add --file tasks.json\n"
        "  lokictl queue add eng --init      (makes the folder a project first)",
    )
    add.add_argument("type", nargs="?", default="general", help="task type (default: general)")
    add.add_argument("--priority", type=priority, help=f"{VALID_PRIORITIES} (default: medium = 5)")
    add.add_argument("--payload", type=_json_object, help='a JSON object, e.g. \'{"action": "x"}\'')
    add.add_argument("--id", help="the task id (default: a new UUID)")
    add.add_argument(
        "--key",
        help="idempotency key: a second task with the same key is a duplicate "
        "(default: a hash of the payload)",
    )
    add.add_argument(
        "--dep", type=words, action="extend", default=[], help="ids it depends on (repeat or a,b)"
    )
    add.add_argument("--file", help="a JSON array of tasks (- reads stdin)")
    add.add_argument(
        "--init", action="store_true", help="outside a project: make this folder one first"
    )
    add.set_defaults(where="optional")
    claim = cmd(
        q,
        "claim",
        "claim the next task for an agent; says why when there is none",
        "  lokictl queue claim --agent a1 --cap eng-backend,eng-qa --lease 600",
    )
    claim.add_argument("--agent", required=True, help="the claiming agent's name")
    claim.add_argument(
        "--cap",
        type=words,
        action="extend",
        required=True,
        help="task types it can do (repeat, or comma-separated)",
    )
    claim.add_argument(
        "--lease",
        type=seconds,
        metavar="SECONDS",
        help="lease in seconds (default: the task's timeout)",
    )
    beat = cmd(q, "heartbeat", "extend a claim's lease")
    beat.add_argument("id", help="the task id").complete = TASK_IDS
    beat.add_argument("--agent", required=True, help="the agent holding the task")
    beat.add_argument(
        "--lease",
        type=seconds,
        metavar="SECONDS",
        help="seconds from now (default: the task's timeout)",
    )
    done = cmd(
        q,
        "complete",
        "complete a claimed task",
        '  lokictl queue complete ID --agent a1 --report \'{"why": "tests pass"}\' --next eng',
    )
    done.add_argument("id", help="the task id").complete = TASK_IDS
    done.add_argument("--agent", required=True, help="the agent holding the task")
    done.add_argument("--report", type=_json_arg, required=True, help="decisionReport, as JSON")
    done.add_argument("--output", default=None, help="the task's output text")
    done.add_argument(
        "--next", type=words, action="extend", help="then claim a task of these types (a,b)"
    )
    fail = cmd(q, "fail", "report a failed attempt (retried with backoff, then dead-lettered)")
    fail.add_argument("id", help="the task id").complete = TASK_IDS
    fail.add_argument("--agent", required=True, help="the agent holding the task")
    fail.add_argument(
        "--error", required=True, help="what went wrong (a rate limit is not counted)"
    )
    fail.add_argument(
        "--retry-after",
        type=seconds,
        metavar="SECONDS",
        help="seconds before a retry (a rate limit)",
    )
    fail.add_argument(
        "--next", type=words, action="extend", help="then claim a task of these types (a,b)"
    )
    cancel = cmd(q, "cancel", "cancel a task and every task that depends on it")
    cancel.add_argument("id", help="the task id").complete = TASK_IDS
    cancel.add_argument("--reason", default="cancelled with lokictl", help="kept with the task")
    get = cmd(
        q,
        "get",
        "one task, all its fields",
        "  lokictl queue get ID\n  lokictl queue get ID --json",
    )
    get.add_argument("id", help="the task id").complete = TASK_IDS
    listing = cmd(
        q,
        "list",
        "tasks with their state, oldest first, page by page",
        "  lokictl queue list --state pending --type eng\n"
        "  lokictl queue list --json=id,type,priority",
    )
    listing.add_argument(
        "--state", choices=STATES, metavar="STATE", help=f"only this state: {', '.join(STATES)}"
    )
    listing.add_argument("--type", help="only this task type")
    listing.add_argument(
        "--limit",
        type=positive_int,
        default=100,
        metavar="N",
        help="tasks per page, 1-1000 (default 100)",
    )
    listing.add_argument("--cursor", help="the next page, as printed after the last one")
    cmd(q, "stats", "counts per state and type, oldest pending age")
    cmd(q, "import", "take in tasks Loki Mode's tools appended to .loki/queue/pending.json")

    dlq = cmd(sub, "dlq", "the dead-letter queue")
    d = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    cmd(d, "list", "dead-lettered tasks and their last error")
    for verb, text in (("retry", "back to pending, retries 0"), ("delete", "gone for good")):
        decide = cmd(d, verb, f"{verb} a dead-lettered task ({text})")
        decide.add_argument("id", help="the dead-lettered task's id").complete = TASK_IDS
        decide.add_argument("--note", default="", help="why (kept in .loki/logs/decisions/)")

    breakers = cmd(
        sub,
        "breakers",
        "circuit breakers per task type (no action: list them)",
        "  lokictl breakers\n  lokictl breakers trip eng-db --reason 'db down'\n"
        "  lokictl breakers reload          exit 1 when the file is rejected",
    )
    b = breakers.add_subparsers(dest="action", metavar="ACTION")
    reset = cmd(b, "reset", "close a breaker (failures back to 0)")
    reset.add_argument("type")
    trip = cmd(b, "trip", "force a breaker open until it is reset")
    trip.add_argument("type")
    trip.add_argument("--reason", default="tripped with lokictl", help="kept with the breaker")
    cmd(b, "reload", "re-read .loki/config/circuit-breakers.yaml")
    cmd(b, "list", "every breaker that is not plainly closed")


# -- reading what people give ---------------------------------------------------------------


def _read_tasks(name: str) -> list[Any]:
    """The tasks of `--file`: a missing file or bad JSON is one line, never a traceback."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(name, "rb") as f:
                data = f.read()
    except OSError as exc:
        raise Failure(f"cannot read --file {name}: {exc.strerror}") from None
    try:
        tasks = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise Failure(f"--file {name} is not valid JSON: {exc}") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise Failure(f"--file {name} must hold a JSON array of task objects")
    return tasks


def _project_for_add(args: argparse.Namespace) -> None:
    """`queue add --init` outside a project makes this folder one; else the usual rule."""
    if args.project is None and not args.init:
        raise Failure(NOT_A_PROJECT + " (or add --init)")
    args.project = args.project or cwd()
    if args.init:
        init_project(args.project)
    check_project(args.project)


# -- what it prints ------------------------------------------------------------------------


def task_state(task: dict[str, Any]) -> str:
    """The state beside a listed task: lokid's own when it sends it, else read from the
    fields that each state sets."""
    if task.get("state"):
        return task["state"]
    if task.get("cancelledAt"):
        return "cancelled"
    if task.get("completedAt"):
        return "completed"
    if task.get("claimedBy"):
        return "in-progress"
    if task.get("lastError") and task.get("retries", 0) >= task.get("maxRetries", 3):
        return "dead-letter"
    return "pending"


def _title(task: dict[str, Any]) -> str:
    payload = task.get("payload") if isinstance(task.get("payload"), dict) else {}
    return str(task.get("title") or payload.get("action") or "")


def _when(task: dict[str, Any], state: str, clock: Clock) -> str:
    """How old the task is, or its claim when it is in progress."""
    return clock.ago(task.get("claimedAt") if state == "in-progress" else task.get("createdAt"))


def task_line(
    task: dict[str, Any], style: Style, clock: Clock, state: str | None = None, widths: Any = None
) -> str:
    """One task: state, id, type, priority, age, title; `widths` lines up a listing."""
    state = state or task_state(task)
    id_width, type_width, when_width = widths or (0, 0, 0)
    return (
        f"{style.pad(state, 11)} {task['id']:{id_width}}  {task['type']:{type_width}}  "
        f"p{task['priority']:<2} {_when(task, state, clock):{when_width}}  {_title(task)}"
    ).rstrip()


def task_lines(
    tasks: list[dict[str, Any]], style: Style, clock: Clock, state: str = ""
) -> list[str]:
    """A listing with its columns lined up."""
    widths = (
        max((len(t["id"]) for t in tasks), default=0),
        max((len(t["type"]) for t in tasks), default=0),
        max((len(_when(t, state or task_state(t), clock)) for t in tasks), default=0),
    )
    return [task_line(t, style, clock, state or None, widths) for t in tasks]


_FIELDS = (
    ("type", "type"),
    ("priority", "priority"),
    ("payload", "payload"),
    ("dependencies", "dependencies"),
    ("createdAt", "created"),
    ("claimedBy", "claimed by"),
    ("claimedAt", "claimed"),
    ("timeout", "timeout"),
    ("retries", "retries"),
    ("lastError", "last error"),
    ("availableAt", "available"),
    ("completedAt", "completed"),
    ("result", "result"),
    ("cancelledAt", "cancelled"),
    ("cancelReason", "reason"),
    ("idempotencyKey", "key"),
)


def task_text(reply: dict[str, Any], style: Style, clock: Clock) -> str:
    """`queue get` for people: one field a line, times readable, JSON values indented."""
    task, state = reply["task"], reply["state"]
    lines = [f"{'id':13} {task['id']}", f"{'state':13} {style(state)}"]
    known = {name for name, _ in _FIELDS} | {"id", "maxRetries", "backoffSeconds"}
    for name, label in _FIELDS:
        value = task.get(name)
        if value in (None, [], {}):
            continue
        if name.endswith("At"):
            text = clock.at(value)
        elif name == "timeout":
            text = f"{value:g}s lease"
        elif name == "retries":
            text = f"{value} of {task.get('maxRetries')} (backoff {task.get('backoffSeconds'):g}s)"
        elif isinstance(value, (dict, list)):
            text = _indented(value)
        else:
            text = str(value)
        lines.append(f"{label:13} {text}")
    for name in sorted(set(task) - known):
        value = task[name]
        lines.append(f"{name:13} {_indented(value) if isinstance(value, (dict, list)) else value}")
    return "\n".join(lines)


def _indented(value: Any) -> str:
    text = msgspec.json.format(json_text(value), indent=2)
    return text.replace("\n", "\n" + " " * 14) if len(text) > 60 else json_text(value)


def no_task_reason(result: dict[str, Any], project: str, clock: Clock) -> str:
    """Why a claim got nothing: the project stopped or paused, breakers open, or simply
    no task of those types ready."""
    if result.get("stopped"):
        return "no task (project stopped: .loki/STOP; run `lokictl resume`)"
    if result.get("paused"):
        return "no task (project paused: .loki/PAUSE; run `lokictl resume`)"
    blocked = result.get("blocked") or {}
    if blocked:
        parts = []
        for kind, b in blocked.items():
            until = f" until {clock.clock(b['until'])}" if b.get("until") else ""
            parts.append(f"{kind}{until}" if b.get("state") == "open" else f"{kind} {b['state']}")
        return f"no task (breakers open: {', '.join(parts)})"
    return "no task"


# -- the commands ----------------------------------------------------------------------------


def cmd_queue(client: Client, args: argparse.Namespace) -> int:
    action = args.action
    if action == "add":
        _project_for_add(args)
    p = {"project": args.project}
    style, clock = style_for(args), clock_for(args)
    if action == "add":
        return _add(client, args, p)
    if action == "claim":
        params = p | {"agent": args.agent, "capabilities": args.cap}
        params |= {"lease": args.lease} if args.lease else {}
        result = client.call("queue.claim", params)
        if result.get("task") is None:
            return out(args, result, lambda: no_task_reason(result, args.project, clock))
        return out(args, result, lambda: task_line(result["task"], style, clock, "in-progress"))
    if action == "heartbeat":
        params = p | {"id": args.id, "agent": args.agent}
        params |= {"lease": args.lease} if args.lease else {}
        result = client.call("queue.heartbeat", params)
        return out(args, result, lambda: f"lease until {clock.at(result['leaseUntil'])}")
    if action in ("complete", "fail"):
        return _finish(client, args, p, style, clock)
    if action == "cancel":
        result = client.call("queue.cancel", p | {"id": args.id, "reason": args.reason})
        return out(args, result, "cancelled: " + " ".join(result["cancelled"]))
    if action == "get":
        result = client.call("queue.get", p | {"id": args.id})
        return out(args, result, lambda: task_text(result, style, clock))
    if action == "list":
        params = p | {"limit": args.limit}
        params |= {k: v for k in ("state", "type", "cursor") if (v := getattr(args, k))}
        result = client.call("queue.list", params)
        for task in result["tasks"]:
            task["state"] = args.state or task_state(task)

        def listing() -> str:
            lines = task_lines(result["tasks"], style, clock)
            if result["cursor"]:
                lines.append(f"(more: --cursor {result['cursor']})")
            return "\n".join(lines) or "no tasks"

        return out(args, result, listing)
    if action == "stats":
        result = client.call("queue.stats", p)
        return out(args, result, lambda: _stats_text(result, style))
    result = client.call("queue.import", p)
    return out(args, result, f"imported {result['imported']}, skipped {result['skipped']}")


def _stats_text(result: dict[str, Any], style: Style) -> str:
    lines = [f"{style.pad(state, 12)} {n}" for state, n in result["states"].items()]
    lines.append(f"blocked by dependencies: {result['blockedByDependencies']}")
    age = result["oldestPendingAgeSeconds"]
    lines.append(f"oldest pending: {'none' if age is None else span(age) + ' old'}")
    return "\n".join(lines)


def _add(client: Client, args: argparse.Namespace, p: dict[str, Any]) -> int:
    if args.file:
        tasks = _read_tasks(args.file)
        result = client.call("queue.enqueue_many", p | {"tasks": tasks})
        lines = [
            r["id"]
            + (
                " (duplicate: that task has the same idempotency key; nothing added)"
                if r["duplicate"]
                else ""
            )
            for r in result["results"]
        ]
        return out(args, result, "\n".join(lines))
    task: dict[str, Any] = {"type": args.type, "payload": args.payload or {}}
    task |= {"dependencies": args.dep} if args.dep else {}
    task |= {"id": args.id} if args.id else {}
    task |= {"idempotencyKey": args.key} if args.key else {}
    task |= {"priority": args.priority} if args.priority is not None else {}
    result = client.call("queue.enqueue", p | {"task": task})
    if not result["duplicate"]:
        return out(args, result, result["id"])
    return _duplicate(client, args, p, result)


def _duplicate(
    client: Client, args: argparse.Namespace, p: dict[str, Any], result: dict[str, Any]
) -> int:
    """Say what the new task matched: the existing task, its type and state, and why."""
    existing = client.call("queue.get", p | {"id": result["id"]})
    task, state = existing["task"], existing["state"]
    why = "same idempotency key" if args.key else "same payload"
    result = {**result, "type": task["type"], "state": state, "reason": why}
    hint = "" if args.key else "; nothing added (--key KEY sets another idempotency key)"
    return out(args, result, f"duplicate of {task['id']} ({task['type']}, {state}), {why}{hint}")


def _finish(
    client: Client, args: argparse.Namespace, p: dict[str, Any], style: Style, clock: Clock
) -> int:
    claim_next = {"claimNext": {"capabilities": args.next}} if args.next else {}
    if args.action == "complete":
        outcome = {"decisionReport": args.report, "status": "success", "output": args.output}
        params = p | {"id": args.id, "agent": args.agent, "result": outcome}
        result = client.call("queue.complete", params | claim_next)
        head = f"{args.id} completed"
    else:
        params = p | {"id": args.id, "agent": args.agent, "error": args.error}
        params |= {"retryAfter": args.retry_after} if args.retry_after is not None else {}
        result = client.call("queue.fail", params | claim_next)
        head = f"{args.id} is {result['state']}"
    if "next" not in result:
        return out(args, result, head)
    claimed = result["next"]
    if claimed.get("task") is not None:
        line = task_line(claimed["task"], style, clock, "in-progress")
    else:
        line = no_task_reason(claimed, args.project, clock)
    return out(args, result, lambda: f"{head}\nnext: {line}")


def cmd_dlq(client: Client, args: argparse.Namespace) -> int:
    p = {"project": args.project}
    style, clock = style_for(args), clock_for(args)
    if args.action == "list":
        result = client.call("dlq.list", p)
        return out(
            args,
            result,
            lambda: (
                "\n".join(
                    f"{line}  last error: {t['lastError']}"
                    for t, line in zip(
                        result["tasks"],
                        task_lines(result["tasks"], style, clock, "dead-letter"),
                        strict=True,
                    )
                )
                or "the dead-letter queue is empty"
            ),
        )
    result = client.call(f"dlq.{args.action}", p | {"id": args.id, "note": args.note})
    done = "back to pending" if args.action == "retry" else "deleted"
    return out(args, result, f"{args.id}: {done}")


def cmd_breakers(client: Client, args: argparse.Namespace) -> int:
    p = {"project": args.project}
    style, clock = style_for(args), clock_for(args)
    if args.action in ("reset", "trip"):
        params = p | {"type": args.type}
        params |= {"reason": args.reason} if args.action == "trip" else {}
        result = client.call(f"breaker.{args.action}", params)
        return out(args, result, f"{args.type}: {style(result['breaker']['state'])}")
    if args.action == "reload":
        return _reload(client, args, p)
    result = client.call("breaker.list", p)

    def listing() -> str:
        lines = []
        for kind, b in result["breakers"].items():
            line = f"{kind:24} {style.pad(b['state'], 9)} failures {b['failures']}"
            if b["state"] == "open" and b.get("halfOpenAt"):
                line += f"  half-open {clock.ago(b['halfOpenAt'])}"
            if b.get("forced"):
                line += f"  (tripped: {b.get('reason') or 'by hand'})"
            lines.append(line)
        return "\n".join(lines) or "no breakers yet (every type is closed)"

    return out(args, result, listing)


def _reload(client: Client, args: argparse.Namespace, p: dict[str, Any]) -> int:
    """A rejected file exits 1 with its file, line, key and reason. A lokid whose answer
    does not name them says so in its `config.invalid` event: read it from there."""
    sub = client.call("subscribe", {"topics": ["config.invalid"], "project": args.project})["sub"]
    result = client.call("breaker.reload", p)
    if result["reloaded"]:
        return out(args, result, "reloaded")
    error = result.get("error") or "rejected"
    if " line " not in error:
        error = _invalid_event(client, sub) or error
    result = {**result, "error": error}
    if args.json:
        out(args, result, "")
    else:
        print(f"lokictl: configuration rejected: {error}", file=sys.stderr)
        print("lokictl: the previous configuration stays in force", file=sys.stderr, flush=True)
    return EXIT_ERROR


def _invalid_event(client: Client, sub: int) -> str | None:
    try:
        while True:
            event = client.next_event(2.0)
            if event["sub"] == sub and event["topic"] == "config.invalid":
                return (event["data"] or {}).get("error")
    except TimeoutError:
        return None


QUEUE_COMMANDS = {"queue": cmd_queue, "dlq": cmd_dlq, "breakers": cmd_breakers}
