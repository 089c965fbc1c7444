"""lokictl queue ..., dlq ..., breakers ...: the task queue from the shell."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from lokictl._client import Client
from lokid.paths import logical_cwd


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _json_arg(text: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def add_queue_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    project = argparse.ArgumentParser(add_help=False)
    project.add_argument("--project", help="the project folder (default: $PWD)")
    parents = [common, project]

    queue = sub.add_parser("queue", parents=parents, help="the task queue")
    q = queue.add_subparsers(dest="action", required=True)
    add = q.add_parser("add", parents=parents, help="enqueue a task (or --file of many)")
    add.add_argument("type", nargs="?", default="general")
    add.add_argument("--priority", default=None, help="1-10 or critical/high/medium/low")
    add.add_argument("--payload", type=_json_arg, default=None, help="JSON object")
    add.add_argument("--id")
    add.add_argument("--dep", action="append", default=[], help="a task it depends on")
    add.add_argument("--file", help="a JSON array of tasks, enqueued in one transaction")
    claim = q.add_parser("claim", parents=parents, help="claim the next task")
    claim.add_argument("--agent", required=True)
    claim.add_argument("--cap", action="append", required=True, help="a task type it can do")
    claim.add_argument("--lease", type=float)
    beat = q.add_parser("heartbeat", parents=parents, help="extend a claim's lease")
    beat.add_argument("id")
    beat.add_argument("--agent", required=True)
    beat.add_argument("--lease", type=float)
    done = q.add_parser("complete", parents=parents, help="complete a claimed task")
    done.add_argument("id")
    done.add_argument("--agent", required=True)
    done.add_argument("--report", type=_json_arg, required=True, help="decisionReport, JSON")
    done.add_argument("--output", default=None)
    done.add_argument("--next", action="append", help="then claim a task of this type (repeat)")
    fail = q.add_parser("fail", parents=parents, help="report a failed attempt")
    fail.add_argument("id")
    fail.add_argument("--agent", required=True)
    fail.add_argument("--error", required=True)
    fail.add_argument("--retry-after", type=float)
    fail.add_argument("--next", action="append", help="then claim a task of this type (repeat)")
    cancel = q.add_parser("cancel", parents=parents, help="cancel a task and its dependents")
    cancel.add_argument("id")
    cancel.add_argument("--reason", default="cancelled with lokictl")
    get = q.add_parser("get", parents=parents, help="one task")
    get.add_argument("id")
    listing = q.add_parser("list", parents=parents, help="tasks, page by page")
    listing.add_argument("--state")
    listing.add_argument("--type")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--cursor")
    q.add_parser("stats", parents=parents, help="counts per state and type")
    q.add_parser("import", parents=parents, help="take in tasks added to pending.json")

    dlq = sub.add_parser("dlq", parents=parents, help="the dead-letter queue")
    d = dlq.add_subparsers(dest="action", required=True)
    d.add_parser("list", parents=parents, help="dead-lettered tasks")
    for verb in ("retry", "delete"):
        decide = d.add_parser(verb, parents=parents, help=f"{verb} a dead-lettered task")
        decide.add_argument("id")
        decide.add_argument("--note", default="", help="why (logged in logs/decisions/)")

    breakers = sub.add_parser("breakers", parents=parents, help="circuit breakers per task type")
    b = breakers.add_subparsers(dest="action")
    reset = b.add_parser("reset", parents=parents, help="close a breaker")
    reset.add_argument("type")
    trip = b.add_parser("trip", parents=parents, help="force a breaker open until reset")
    trip.add_argument("type")
    trip.add_argument("--reason", default="tripped with lokictl")
    b.add_parser("reload", parents=parents, help="re-read circuit-breakers.yaml")


def _project(args: argparse.Namespace) -> str:
    return getattr(args, "project", None) or logical_cwd()


def _claim_next(args: argparse.Namespace) -> dict[str, Any]:
    return {"claimNext": {"capabilities": args.next}} if args.next else {}


def _next_line(result: dict[str, Any]) -> str:
    """The claim made with --next, as `queue claim` would print it."""
    if "next" not in result:
        return ""
    claimed = result["next"]
    if claimed.get("task") is not None:
        return "\nnext: " + _task_line(claimed["task"])
    why = "stopped" if claimed.get("stopped") else "paused" if claimed.get("paused") else ""
    return f"\nnext: no task{' (' + why + ')' if why else ''}"


def _task_line(task: dict[str, Any], state: str | None = None) -> str:
    where = f"{state:11} " if state else ""
    title = task.get("title") or task.get("payload", {}).get("action") or ""
    return f"{where}{task['id']}  {task['type']}  p{task['priority']}  {title}".rstrip()


def cmd_queue(client: Client, args: argparse.Namespace) -> int:
    p = {"project": _project(args)}
    action = args.action
    if action == "add":
        if args.file:
            with open(args.file, "rb") as f:
                tasks = msgspec.json.decode(f.read())
            result = client.call("queue.enqueue_many", p | {"tasks": tasks})
            lines = [
                f"{r['id']}{' (duplicate)' if r['duplicate'] else ''}" for r in result["results"]
            ]
            return _out(args, result, "\n".join(lines))
        task: dict[str, Any] = {"type": args.type, "payload": args.payload or {}}
        task |= {"dependencies": args.dep} if args.dep else {}
        task |= {"id": args.id} if args.id else {}
        task |= {"priority": _priority(args.priority)} if args.priority else {}
        result = client.call("queue.enqueue", p | {"task": task})
        return _out(args, result, result["id"] + (" (duplicate)" if result["duplicate"] else ""))
    if action == "claim":
        params = p | {"agent": args.agent, "capabilities": args.cap}
        params |= {"lease": args.lease} if args.lease else {}
        result = client.call("queue.claim", params)
        if result.get("task") is None:
            why = ", ".join(f"{t} {b['state']}" for t, b in (result.get("blocked") or {}).items())
            _out(args, result, f"no task{' (breakers: ' + why + ')' if why else ''}")
            return 0
        return _out(args, result, _task_line(result["task"]))
    if action == "heartbeat":
        params = p | {"id": args.id, "agent": args.agent}
        params |= {"lease": args.lease} if args.lease else {}
        result = client.call("queue.heartbeat", params)
        return _out(args, result, f"lease until {result['leaseUntil']}")
    if action == "complete":
        outcome = {"decisionReport": args.report, "status": "success", "output": args.output}
        params = p | {"id": args.id, "agent": args.agent, "result": outcome}
        result = client.call("queue.complete", params | _claim_next(args))
        return _out(args, result, f"{args.id} completed" + _next_line(result))
    if action == "fail":
        params = p | {"id": args.id, "agent": args.agent, "error": args.error}
        params |= {"retryAfter": args.retry_after} if args.retry_after is not None else {}
        result = client.call("queue.fail", params | _claim_next(args))
        return _out(args, result, f"{args.id} is {result['state']}" + _next_line(result))
    if action == "cancel":
        result = client.call("queue.cancel", p | {"id": args.id, "reason": args.reason})
        return _out(args, result, "cancelled: " + " ".join(result["cancelled"]))
    if action == "get":
        result = client.call("queue.get", p | {"id": args.id})
        return _out(args, result, _json(result))
    if action == "list":
        params = p | {"limit": args.limit}
        params |= {k: v for k in ("state", "type", "cursor") if (v := getattr(args, k))}
        result = client.call("queue.list", params)
        lines = [_task_line(t) for t in result["tasks"]]
        if result["cursor"]:
            lines.append(f"(more: --cursor {result['cursor']})")
        return _out(args, result, "\n".join(lines) or "no tasks")
    if action == "stats":
        result = client.call("queue.stats", p)
        lines = [f"{state:12} {n}" for state, n in result["states"].items()]
        lines.append(f"blocked by dependencies: {result['blockedByDependencies']}")
        age = result["oldestPendingAgeSeconds"]
        lines.append(f"oldest pending: {'none' if age is None else f'{age:.0f}s'}")
        return _out(args, result, "\n".join(lines))
    result = client.call("queue.import", p)
    return _out(args, result, f"imported {result['imported']}, skipped {result['skipped']}")


def cmd_dlq(client: Client, args: argparse.Namespace) -> int:
    p = {"project": _project(args)}
    if args.action == "list":
        result = client.call("dlq.list", p)
        lines = [f"{_task_line(t)}  last error: {t['lastError']}" for t in result["tasks"]]
        return _out(args, result, "\n".join(lines) or "the dead-letter queue is empty")
    result = client.call(f"dlq.{args.action}", p | {"id": args.id, "note": args.note})
    return _out(args, result, f"{args.id}: {args.action} done")


def cmd_breakers(client: Client, args: argparse.Namespace) -> int:
    p = {"project": _project(args)}
    if args.action in ("reset", "trip"):
        params = p | {"type": args.type}
        params |= {"reason": args.reason} if args.action == "trip" else {}
        result = client.call(f"breaker.{args.action}", params)
        return _out(args, result, f"{args.type}: {result['breaker']['state']}")
    if args.action == "reload":
        result = client.call("breaker.reload", p)
        return _out(args, result, "reloaded" if result["reloaded"] else result["error"])
    result = client.call("breaker.list", p)
    lines = [
        f"{t:24} {b['state']:9} failures {b['failures']}"
        + (f"  half-open at {b['halfOpenAt']}" if b["state"] == "open" and b["halfOpenAt"] else "")
        for t, b in result["breakers"].items()
    ]
    return _out(args, result, "\n".join(lines) or "no breakers yet (every type is closed)")


def _priority(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _out(args: argparse.Namespace, value: Any, text: str) -> int:
    print(_json(value) if args.json else text, file=sys.stdout, flush=True)
    return 0


QUEUE_COMMANDS = {"queue": cmd_queue, "dlq": cmd_dlq, "breakers": cmd_breakers}
