"""lokictl init, project ..., pause, resume, stop, and the project half of `lokictl status`."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from lokictl._base import Failure, cwd, init_project, out, project_of, typed_path
from lokictl._client import Client
from lokictl._look import Clock, Style, clock_for, style_for


def add_project_commands(sub: Any) -> None:
    from lokictl._command import command

    init = command(
        sub,
        "init",
        "make a folder a Loki Mode project (creates its .loki/) and have lokid watch it",
        "  lokictl init              this folder\n  lokictl init ~/app",
    )
    init.add_argument("path", nargs="?", help="the folder (default: the current one)")
    project = command(sub, "project", "the projects lokid watches")
    p = project.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = command(
        p,
        "add",
        "watch a project folder (default: the current one); `lokictl init` also creates .loki/",
        "  lokictl project add\n  lokictl project add ../app/",
    )
    add.add_argument("path", nargs="?", help="the folder (relative paths and ~ work)")
    remove = command(p, "remove", "stop watching a project (its files are left alone)")
    remove.add_argument("path", nargs="?", help="the folder (default: the current project)")
    command(p, "list", "every watched project, its queue counts and run")
    for verb, text in (
        ("pause", "pause the project's run and its claims (writes .loki/PAUSE)"),
        ("resume", "resume after pause or stop (removes .loki/PAUSE and .loki/STOP)"),
        ("stop", "stop the run (writes .loki/STOP; the container is stopped after a grace)"),
    ):
        command(sub, verb, text, f"  lokictl {verb}\n  lokictl {verb} --project ~/app", "required")


def _project_line(info: dict[str, Any], style: Style) -> str:
    flags = [style(f) for f in ("missing",) if info.get(f)]
    flags += [] if info["hasLoki"] else ["no .loki/"]
    queue = info.get("queue") or {}
    counts = f"  pending {queue.get('pending', 0)}, running {queue.get('in-progress', 0)}"
    run = info.get("run")
    state = f"  run {style(run['state'])}" if run else ""
    return f"{info['path']}{counts if queue else ''}{state}" + (
        f"  ({', '.join(flags)})" if flags else ""
    )


def cmd_init(client: Client, args: argparse.Namespace) -> int:
    path = typed_path(args.path or cwd())
    created = init_project(path)
    result = client.call("project.add", {"path": path})
    result["created"] = created
    verb = "initialised" if created else "already a project:"
    return out(args, result, f"{verb} {path} (lokid watches it)")


def cmd_project(client: Client, args: argparse.Namespace) -> int:
    style = style_for(args)
    if args.action == "list":
        result = client.call("project.list")
        return out(
            args,
            result,
            lambda: "\n".join(_project_line(p, style) for p in result["projects"]) or "no projects",
        )
    if args.action == "add":
        path = typed_path(args.path or cwd())
        if not os.path.isdir(path):
            raise Failure(f"no such folder: {path}")
        result = client.call("project.add", {"path": path})
        hint = "" if result["project"]["hasLoki"] else f"; `lokictl init {path}` creates .loki/"
        return out(args, result, "watching " + _project_line(result["project"], style) + hint)
    path = typed_path(args.path) if args.path else project_of(args)
    result = client.call("project.remove", {"path": path})
    return out(args, result, f"removed {path}" if result["removed"] else f"{path} was not watched")


SIGNAL_FILES = ("PAUSE", "STOP")


def cmd_signal(client: Client, args: argparse.Namespace) -> int:
    loki = os.path.join(args.project, ".loki")
    before = {name for name in SIGNAL_FILES if os.path.exists(os.path.join(loki, name))}
    result = client.call(f"signal.{args.command}", {"project": args.project})
    if args.command == "resume":
        return _resumed(args, result, loki, before)
    text = {"pause": "paused", "stop": "stopping"}[args.command]
    note = f"\n{result['note']}" if result.get("note") else ""  # Loki Mode's perpetual mode
    return out(args, result, f"{text} ({loki}/{args.command.upper()} written){note}")


def _resumed(args: argparse.Namespace, result: dict[str, Any], loki: str, before: set[str]) -> int:
    """`resume` clears what `stop` and `pause` set, as Loki Mode's `loki resume` does.

    A lokid that predates that (its answer has no `stopped`) removed PAUSE only: STOP is
    removed here, through the file, as Loki Mode's own CLI does. What was removed is what
    was there before and is gone now, whichever lokid did it."""
    if "stopped" not in result:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(loki, "STOP"))
    gone = [n for n in SIGNAL_FILES if n in before and not os.path.exists(os.path.join(loki, n))]
    result = {"stopped": False, **result, "cleared": result.get("cleared") or gone}
    names = ", ".join(f".loki/{name}" for name in result["cleared"])
    return out(
        args,
        result,
        f"resumed (removed {names})" if names else "resumed (was neither paused nor stopped)",
    )


def project_status_text(st: dict[str, Any], args: argparse.Namespace) -> str:
    style, clock = style_for(args), clock_for(args)
    flags = [style(name) for name in ("paused", "stopping", "missing") if st[name]]
    lines = [f"project {st['path']}" + (f"  [{', '.join(flags)}]" if flags else "")]
    run = st["run"]
    if run:
        port = f" port {run['port']}" if run.get("port") else ""
        lines.append(f"run: {style(run['state'])} {run['container']} ({run['image']}){port}")
    else:
        lines.append(f"run: none{' (' + st['runError'] + ')' if st['runError'] else ''}")
    if st["queue"] is not None:
        lines.append("queue: " + ", ".join(f"{style(k)} {v}" for k, v in st["queue"].items()))
    lines.append("breakers: " + _breakers_text(st["breakers"], style, clock))
    lines.append("signals: " + (", ".join(st["signals"]) or "none"))
    if st["dashboard"]:
        d = st["dashboard"]
        lines.append(f"loki: {d['mode']}, phase {d['phase']}, iteration {d['iteration']}")
    for event in st["events"][-5:]:
        lines.append(f"  {clock.ago(event['time'])} {event['topic']}")
    return "\n".join(lines)


def _breakers_text(breakers: dict[str, Any], style: Style, clock: Clock) -> str:
    unusual = {t: b for t, b in breakers.items() if b["state"] != "closed"}
    parts = []
    for kind, b in unusual.items():
        until = f" until {clock.clock(b['halfOpenAt'])}" if b.get("halfOpenAt") else ""
        parts.append(f"{kind} {style(b['state'])}{until if b['state'] == 'open' else ''}")
    return ", ".join(parts) or "all closed"


PROJECT_COMMANDS = {
    "project": cmd_project,
    "init": cmd_init,
    "pause": cmd_signal,
    "resume": cmd_signal,
    "stop": cmd_signal,
}
