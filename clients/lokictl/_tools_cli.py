"""lokictl info, completion, man, top, and the hidden `__complete` the shells call.

shtab (completion) and argparse-manpage (man) are imported only by their commands.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from lokictl._base import EXIT_NOT_RUNNING, EXIT_OK, Failure, out, project_of
from lokictl._client import Client, DaemonError, NotRunning, ProtocolError
from lokictl._look import span, style_for

SHELLS = ("bash", "zsh", "fish")
# bash calls this for task ids (TASK_IDS in lokictl._queue_cli).
BASH_PREAMBLE = """
_lokictl_task_ids() {
  compgen -W "$(lokictl __complete tasks 2>/dev/null)" -- "$1"
}
"""
# What lokid's environment may hold that changes where runs go (daemon.info).
RUN_ENV = ("DOCKER_HOST", "DOCKER_CONTEXT", "LOKI_DOCKER_IMAGE")


def add_tool_commands(sub: Any) -> None:
    from lokictl._command import command

    top = command(
        sub,
        "top",
        "a live full-screen view: run, queue, tasks in progress, breakers, events; keys act",
        "  lokictl top\n  lokictl top --all          every watched project\n\n"
        "keys: p pause/resume, s stop, j/k or arrows select, r retry / d delete a dead\n"
        "letter, enter follow a task, a all projects, q quit",
        "optional",
    )
    top.add_argument("--all", action="store_true", help="every watched project")
    top.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between refreshes (default 1)",
    )
    command(
        sub,
        "info",
        "where things are: socket, lokid's pid, uptime, log file, state folder, Docker "
        "endpoint and environment, watched projects and what is wrong with them "
        "(never starts lokid; exit 3 when it is not running)",
        "  lokictl info\n  lokictl info --json",
    )
    completion = command(
        sub,
        "completion",
        "print the shell completion script (generated from this parser)",
        "  lokictl completion bash > ~/.local/share/bash-completion/completions/lokictl\n"
        "  lokictl completion zsh > ~/.zfunc/_lokictl\n"
        "  lokictl completion fish > ~/.config/fish/completions/lokictl.fish",
    )
    completion.add_argument("shell", choices=SHELLS, help="bash, zsh or fish")
    command(sub, "man", "print the man page (roff, from this parser): lokictl man | man -l -")


# -- info ------------------------------------------------------------------------------------


def _socket_source(args: argparse.Namespace) -> str:
    if args.socket:
        return "--socket"
    if os.environ.get("LOKID_SOCKET"):
        return "LOKID_SOCKET"
    if sys.platform != "darwin" and os.environ.get("XDG_RUNTIME_DIR"):
        return "XDG_RUNTIME_DIR"
    return "default"


def cmd_info(_: Any, args: argparse.Namespace) -> int:
    """Everything about where lokid is, from a daemon that may not be running."""
    from pathlib import Path

    from lokid import __version__
    from lokid.paths import default_socket_path, state_dir

    socket = Path(args.socket) if args.socket else default_socket_path()
    info: dict[str, Any] = {
        "lokictl": __version__,
        "socket": str(socket),
        "socketFrom": _socket_source(args),
        "spawnLog": str(state_dir() / "lokid.log"),
        "shellEnvironment": {k: os.environ[k] for k in RUN_ENV if os.environ.get(k)},
        "running": False,
    }
    try:
        with Client.connect(socket, spawn=False) as client:
            info["running"] = True
            info["daemon"] = _daemon_info(client)
    except NotRunning:
        pass
    except (DaemonError, ProtocolError, OSError) as exc:
        info["error"] = str(exc)
    out(args, info, lambda: _info_text(info, args))
    return EXIT_OK if info["running"] else EXIT_NOT_RUNNING


def _daemon_info(client: Client) -> dict[str, Any]:
    """`daemon.info` when lokid has it; else what `daemon.status` and `project.list` say."""
    hello = client.call("hello", {"client": "lokictl"})
    if "daemon.info" in hello["capabilities"]:
        return client.call("daemon.info")
    status = client.call("daemon.status")
    projects = client.call("project.list")["projects"]
    return {
        "version": status["version"],
        "pid": status["pid"],
        "uptimeS": status["uptime_s"],
        "partial": True,
        "projects": [
            {
                "path": p["path"],
                "watched": p["watched"],
                "missing": p["missing"],
                "hasLoki": p["hasLoki"],
                "problem": _problem(p),
            }
            for p in projects
        ],
    }


def _problem(p: dict[str, Any]) -> str | None:
    if p.get("missing"):
        return "the folder is gone"
    if not p.get("hasLoki"):
        return "no .loki/ (run `lokictl init` there)"
    return None


def _info_text(info: dict[str, Any], args: argparse.Namespace) -> str:
    style = style_for(args)
    lines = [
        f"lokictl     {info['lokictl']}",
        f"socket      {info['socket']} (from {info['socketFrom']})",
    ]
    d = info.get("daemon")
    if not info["running"]:
        lines.append(f"lokid       {style('not running', 'error')}" + _error(info))
        lines.append(f"spawn log   {info['spawnLog']} (where a lokid started by lokictl logs)")
        return "\n".join(lines)
    assert d is not None
    lines.append(f"lokid       {d['version']}, pid {d['pid']}, up {span(d['uptimeS'])}")
    log = d.get("logFile") or (None if d.get("partial") else "stderr (not a file)")
    lines.append(f"log         {log or info['spawnLog'] + ' (if lokictl started it)'}")
    if d.get("stateDir"):
        lines.append(f"state       {d['stateDir']}")
    docker = d.get("docker")
    if docker:
        lines.append(f"docker      {docker['endpoint']} (from {docker['source']})")
    lines += _environment_lines(info, d, style)
    lines.append("projects" + ("    none" if not d["projects"] else ""))
    for p in d["projects"]:
        problem = f"  {style(p['problem'], 'error')}" if p.get("problem") else ""
        watched = "" if p.get("watched", True) else "  (not watched)"
        lines.append(f"  {p['path']}{watched}{problem}")
    if d.get("partial"):
        lines.append("(this lokid has no daemon.info: its log file, state folder and Docker")
        lines.append(" endpoint are not known; upgrade lokid to see them)")
    return "\n".join(lines)


def _error(info: dict[str, Any]) -> str:
    return f" ({info['error']})" if info.get("error") else ""


def _environment_lines(info: dict[str, Any], d: dict[str, Any], style: Any) -> list[str]:
    """lokid keeps the environment of the shell that started it: say where this shell's
    differs, since runs follow lokid's."""
    if "environment" not in d:
        return []
    theirs, ours = d["environment"], info["shellEnvironment"]
    lines = [f"env         {k}={v}" for k, v in sorted(theirs.items())]
    for key in RUN_ENV:
        if theirs.get(key) != ours.get(key):
            lines.append(
                style(
                    f"differs     {key}: lokid has {theirs.get(key) or '(unset)'}, this shell "
                    f"{ours.get(key) or '(unset)'}",
                    "error",
                )
                + " (`lokictl daemon stop`, then any command starts lokid from this shell)"
            )
    return lines


# -- completion, man, __complete -----------------------------------------------------------


def cmd_completion(_: Any, args: argparse.Namespace) -> int:
    import shtab

    from lokictl._command import full_parser

    preamble = BASH_PREAMBLE if args.shell == "bash" else ""
    print(shtab.complete(full_parser(), args.shell, preamble=preamble), end="")
    return EXIT_OK


def cmd_man(_: Any, args: argparse.Namespace) -> int:
    print(man_page(), end="")
    return EXIT_OK


def man_page() -> str:
    from argparse_manpage.manpage import Manpage

    from lokictl._command import full_parser
    from lokid import __version__

    parser = full_parser()
    data = {
        "prog": "lokictl",
        "version": __version__,
        "description": "the command line for lokid",
        "project_name": "lokid",
        "manual_title": "lokid manual",
        "date": "2026",
    }
    return str(Manpage(parser, data, format="single-commands-section"))


def complete_words(words: list[str]) -> int:
    """`lokictl __complete tasks`: the current project's task ids, one a line, from a
    running lokid only; silent when there is none (a shell is waiting)."""
    if words[:1] != ["tasks"]:
        return EXIT_OK
    try:
        project = project_of(argparse.Namespace(project=None), required=False)
    except Failure:
        project = None
    if project is None:
        return EXIT_OK
    try:
        with Client.connect(timeout=2.0) as client:
            tasks = client.call("queue.list", {"project": project, "limit": 1000})["tasks"]
    except (NotRunning, DaemonError, ProtocolError, OSError):
        return EXIT_OK
    print("\n".join(t["id"] for t in tasks))
    return EXIT_OK


# -- top -------------------------------------------------------------------------------------


def cmd_top(client: Client, args: argparse.Namespace) -> int:
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        raise Failure("top needs a terminal (for scripts: lokictl status --json, events)")
    from lokictl._top import run_top

    return run_top(client, args)


TOOL_COMMANDS = {"top": cmd_top, "info": cmd_info, "completion": cmd_completion, "man": cmd_man}
