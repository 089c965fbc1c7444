"""lokictl project ..., pause, resume, stop, and the project half of `lokictl status`."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from lokictl._client import Client
from lokid.paths import logical_cwd


def project_path(args: argparse.Namespace) -> str:
    """`--project` or the path argument, else the logical $PWD."""
    given = getattr(args, "project", None) or getattr(args, "path", None)
    return given or logical_cwd()


def add_project_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    project = sub.add_parser("project", parents=[common], help="the projects lokid watches")
    p = project.add_subparsers(dest="action", required=True)
    for verb, text in (("add", "watch a project"), ("remove", "stop watching a project")):
        cmd = p.add_parser(verb, parents=[common], help=f"{text} (default: $PWD)")
        cmd.add_argument("path", nargs="?")
    p.add_parser("list", parents=[common], help="every watched project")
    for verb, text in (
        ("pause", "pause this project's run (.loki/PAUSE)"),
        ("resume", "resume it (removes .loki/PAUSE)"),
        ("stop", "stop it (.loki/STOP; the container run is stopped after a grace period)"),
    ):
        cmd = sub.add_parser(verb, parents=[common], help=text)
        cmd.add_argument("--project", help="the project folder (default: $PWD)")


def _project_line(info: dict[str, Any]) -> str:
    flags = [f for f in ("missing",) if info.get(f)] + ([] if info["hasLoki"] else ["no .loki"])
    queue = info.get("queue") or {}
    counts = f"  pending {queue.get('pending', 0)}, running {queue.get('in-progress', 0)}"
    run = info.get("run")
    state = f"  run {run['state']}" if run else ""
    return f"{info['path']}{counts if queue else ''}{state}" + (
        f"  ({', '.join(flags)})" if flags else ""
    )


def cmd_project(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        result = client.call("project.list")
        text = "\n".join(_project_line(p) for p in result["projects"]) or "no projects"
    elif args.action == "add":
        result = client.call("project.add", {"path": project_path(args)})
        text = "watching " + _project_line(result["project"])
    else:
        result = client.call("project.remove", {"path": project_path(args)})
        text = "removed" if result["removed"] else "was not watched"
    return _out(args, result, text)


def cmd_signal(client: Client, args: argparse.Namespace) -> int:
    result = client.call(f"signal.{args.command}", {"project": project_path(args)})
    text = {"pause": "paused", "resume": "resumed", "stop": "stopping"}[args.command]
    return _out(args, result, text)


def project_status_text(st: dict[str, Any]) -> str:
    flags = [name for name in ("paused", "stopping", "missing") if st[name]]
    lines = [f"project {st['path']}" + (f"  [{', '.join(flags)}]" if flags else "")]
    run = st["run"]
    if run:
        port = f" port {run['port']}" if run.get("port") else ""
        lines.append(f"run: {run['state']} {run['container']} ({run['image']}){port}")
    else:
        lines.append(f"run: none{' (' + st['runError'] + ')' if st['runError'] else ''}")
    if st["queue"] is not None:
        lines.append("queue: " + ", ".join(f"{k} {v}" for k, v in st["queue"].items()))
    unusual = {t: b for t, b in st["breakers"].items() if b["state"] != "closed"}
    lines.append(
        "breakers: " + (", ".join(f"{t} {b['state']}" for t, b in unusual.items()) or "all closed")
    )
    lines.append("signals: " + (", ".join(st["signals"]) or "none"))
    if st["dashboard"]:
        d = st["dashboard"]
        lines.append(f"loki: {d['mode']}, phase {d['phase']}, iteration {d['iteration']}")
    for event in st["events"][-5:]:
        lines.append(f"  {event['time']} {event['topic']}")
    return "\n".join(lines)


def _out(args: argparse.Namespace, value: Any, text: str) -> int:
    print(msgspec.json.encode(value).decode() if args.json else text, flush=True)
    return 0


PROJECT_COMMANDS = {"project": cmd_project, "pause": cmd_signal, "resume": cmd_signal}
PROJECT_COMMANDS["stop"] = cmd_signal
