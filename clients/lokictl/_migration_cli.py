"""lokictl migration ...: Loki Mode's codebase migrations (`loki migrate`) through lokid."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lokictl._base import out
from lokictl._client import Client

PHASES = ("understand", "guardrail", "migrate", "verify")
MARKS = {"completed": "[x]", "in_progress": "[>]", "failed": "[!]"}
DESTROYS = (
    "rollback runs `git reset --hard loki-migrate/{step}/pre` in {codebase}: uncommitted"
    " changes to tracked files are lost for good and the branch moves back to the"
    " checkpoint (later commits stay reachable only through `git reflog`); untracked"
    " files are kept."
)


def add_migration_commands(sub: Any) -> None:
    from lokictl._command import command

    migration = command(
        sub,
        "migration",
        "Loki Mode's codebase migrations (loki migrate), in ~/.loki/migrations",
        "  lokictl migration list\n"
        "  lokictl migration show mig_20261130_0412_app\n"
        "  lokictl migration advance mig_20261130_0412_app understand",
    )
    m = migration.add_subparsers(dest="action", required=True, metavar="ACTION")
    command(m, "list", "every migration in ~/.loki/migrations")
    show = command(m, "show", "phases, features, steps, last checkpoint")
    show.add_argument("id", help="the migration id (mig_...)")
    for verb, text in (
        ("start", "start a phase (nothing happens if it is in progress)"),
        ("advance", "complete a phase and start the next, if its gate passes"),
    ):
        cmd = command(m, verb, text)
        cmd.add_argument("id", help="the migration id (mig_...)")
        cmd.add_argument("phase", choices=PHASES)
    progress = command(m, "progress", "append a session to the migration's progress.md")
    progress.add_argument("id", help="the migration id (mig_...)")
    progress.add_argument("summary", help="what the session did")
    progress.add_argument("--agent", default="lokictl", help="who did the work (default lokictl)")
    progress.add_argument("--steps-completed", help="e.g. 's1, s2'")
    progress.add_argument("--tests", help="e.g. '42/42'")
    progress.add_argument("--notes")
    checkpoint = command(m, "checkpoint", "git tag loki-migrate/<step>/pre in the codebase")
    checkpoint.add_argument("id", help="the migration id (mig_...)")
    checkpoint.add_argument("step", help="the step id (s1, s2, ...)")
    rollback = command(
        m,
        "rollback",
        "DESTRUCTIVE: git reset --hard the codebase to a step's checkpoint; "
        + DESTROYS.format(step="<step>", codebase="the migration's codebase"),
    )
    rollback.add_argument("id", help="the migration id (mig_...)")
    rollback.add_argument("step", help="the step id (s1, s2, ...)")
    rollback.add_argument(
        "--yes-destroy-work",
        action="store_true",
        help="confirm: uncommitted changes to tracked files in the codebase are lost",
    )


def _when(text: str | None) -> str:
    return (text or "")[:19].replace("T", " ")


def _phase_line(p: dict[str, Any]) -> str:
    if p["status"] == "completed" and p["completed_at"]:
        state = f"completed {_when(p['completed_at'])}"
    elif p["status"] == "in_progress" and p["started_at"]:
        state = f"in progress since {_when(p['started_at'])}"
    else:
        state = p["status"].replace("_", " ")
    return f"  {MARKS.get(p['status'], '[ ]')} {p['phase']:<10} {state}"


def list_text(result: dict[str, Any]) -> str:
    lines = [
        f"{m['id']}  {m['status']:<11} {m['current_phase']:<10} {m['source']} -> {m['target']}"
        for m in result["migrations"]
    ]
    return "\n".join(lines) or "no migrations (start one with: loki migrate <path> --target <t>)"


def show_text(r: dict[str, Any]) -> str:
    progress = r["progress"]
    features, steps = progress["features"], progress["steps"]
    lines = [
        f"{r['id']}  {progress['status']}",
        f"codebase: {r['source']} -> {r['target']}",
        f"folder: {r['path']}",
        "phases:",
        *(_phase_line(p) for p in r["phases"]),
        f"features: {features['passing']}/{features['total']} passing",
        f"steps: {steps['completed']}/{steps['total']} completed"
        + (f", working on {progress['current_step']}" if progress["current_step"] else ""),
    ]
    last = progress["last_checkpoint"]
    if last:
        lines.append(
            f"last checkpoint: {last['tag']} {_when(last['timestamp'])}".rstrip()
            + f" ({progress['checkpoints_count']} in all)"
        )
    else:
        lines.append("last checkpoint: none")
    return "\n".join(lines)


def _progress_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"id": args.id, "agent": args.agent, "summary": args.summary}
    details = {
        "steps_completed": args.steps_completed,
        "tests_passing": args.tests,
        "notes": args.notes,
    }
    details = {k: v for k, v in details.items() if v}
    if details:
        params["details"] = details
    return params


def _rollback(client: Client, args: argparse.Namespace) -> tuple[Any, str] | None:
    if not args.yes_destroy_work:
        codebase = client.call("migration.get", {"id": args.id})["source"]
        print(f"lokictl: {DESTROYS.format(step=args.step, codebase=codebase)}", file=sys.stderr)
        print("lokictl: add --yes-destroy-work to do it", file=sys.stderr)
        return None
    params = {"id": args.id, "step": args.step, "confirm": True}
    r = client.call("migration.rollback", params)
    was = f" (was {r['previous_head'][:12]})" if r["previous_head"] else ""
    return r, f"reset to {r['tag']} at {r['head'][:12]}{was}"


def cmd_migration(client: Client, args: argparse.Namespace) -> int:
    action = args.action
    if action == "rollback":
        done = _rollback(client, args)
        if done is None:
            return 2
        result, text = done
    elif action == "list":
        result = client.call("migration.list")
        text = list_text(result)
    elif action == "show":
        result = client.call("migration.get", {"id": args.id})
        text = show_text(result)
    elif action == "start":
        result = client.call("migration.start_phase", {"id": args.id, "phase": args.phase})
        text = f"{args.phase} {'started' if result['started'] else 'was already in progress'}"
    elif action == "advance":
        result = client.call("migration.advance", {"id": args.id, "phase": args.phase})
        text = f"{args.phase} completed" + (
            f", {result['next']} in progress" if result["next"] else ": migration done"
        )
    elif action == "progress":
        result = client.call("migration.progress", _progress_params(args))
        text = f"session added under {result['phase']} ({result['sessions']} kept)"
    else:
        result = client.call("migration.checkpoint", {"id": args.id, "step": args.step})
        text = f"tagged {result['tag']} at {result['commit'][:12]}"
    return out(args, result, text)


MIGRATION_COMMANDS = {"migration": cmd_migration}
