"""lokictl: the command line for lokid.

Only the named command's branch of the parser is built, and each area's module is
imported when used: `lokictl status` pays for nothing else (see bench/bench_ping.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from lokictl import _command
from lokictl._base import (
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_LOST,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    Failure,
    out,
    project_of,
    report_error,
    request_timeout,
    wants_json,
)
from lokictl._client import Client, DaemonError, NotRunning, ProtocolError
from lokictl._command import Formatter, Parser, add_common, command

Command = Callable[[Client, argparse.Namespace], int]

TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")

EXAMPLES = """examples:
  lokictl init                         make this folder a Loki Mode project and watch it
  lokictl status                       lokid, and the project you are in
  lokictl queue add eng --priority high --payload '{"action": "implement"}'
  lokictl queue list --state pending
  lokictl events 'queue.*'             live events until ^C
  lokictl top                          a live full-screen view
  lokictl info                         where lokid's socket, log and state are

The project is the nearest folder at or above this one with a .loki/ (as git finds a
repository), or --project PATH. lokictl starts lokid when it is not running, unless
--no-spawn or LOKICTL_NO_SPAWN=1. The options above are accepted after the command too.

environment:
  LOKID_SOCKET       lokid's socket (as --socket)
  LOKICTL_NO_SPAWN   1/true/yes/on: never start lokid (as --no-spawn); 0/false/no/off
  LOKICTL_TIMEOUT    seconds a request waits for its reply (default 30; streams never time out)
  NO_COLOR           any value: no colour"""


# Global options, accepted anywhere on the line (before or after the command). They are
# taken out of argv before argparse sees it: a parse then builds only the few options of
# the command itself, which keeps `lokictl status` as fast as it was. They are added to
# the parsers only to be shown (help, the man page, completion).
FLAGS = {"--json": "json", "--no-color": "no_color", "--no-spawn": "no_spawn", "--version": "v"}
VALUES = {"--socket": "socket", "--jq": "jq"}
GLOBALS = {"json": False, "json_fields": None, "jq": None, "no_color": False, "socket": None}


def split_globals(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The global options in `argv` (until a `--`), and the words left for argparse."""
    found: dict[str, Any] = {**GLOBALS, "no_spawn": None, "v": False}
    rest: list[str] = []
    words = iter(argv)
    for word in words:
        name, eq, value = word.partition("=")
        if word == "--":
            rest += [word, *words]
        elif word in FLAGS:
            found[FLAGS[word]] = True
        elif name == "--json" and eq:
            found["json"] = True
            found["json_fields"] = [f.strip() for f in value.split(",") if f.strip()]
        elif name in VALUES:
            if not eq:
                value = next(words, "")
            if not value:
                raise Failure(f"{name} needs a value (see `lokictl --help`)")
            found[VALUES[name]] = value
        else:
            rest.append(word)
    return found, rest


def _parser(argv: list[str] | None = None, showing: bool = False) -> argparse.ArgumentParser:
    """The parser for `argv` (global options already taken out): only the named command's
    branch is built (every parser costs `lokictl status` start-up time); the whole tree
    for help or a typo. `showing` adds the global options, for help and the man page."""
    argv = sys.argv[1:] if argv is None else argv
    shown = _command.SHOWING = showing or "-h" in argv or "--help" in argv
    parser = Parser(
        prog="lokictl",
        description="lokictl: the command line for lokid, the daemon that owns a Loki Mode "
        "project's .loki/ state.",
        epilog=EXAMPLES + "\n\n" + EXIT_CODES,
        formatter_class=Formatter,
        add_help=shown,
    )
    if shown:
        add_common(parser, True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((w for w in argv if not w.startswith("-")), None)
    builders = [BRANCHES[wanted]] if wanted in BRANCHES else list(dict.fromkeys(BRANCHES.values()))
    for build in builders:
        build(sub)
    return parser


def _preprocess(argv: list[str]) -> list[str]:
    """`help [COMMAND...]` is `COMMAND... --help`."""
    return [*argv[1:], "--help"] if argv[:1] == ["help"] else argv


def env_flag(name: str) -> bool:
    """A yes/no environment variable in any of the usual spellings; anything else is
    refused with the valid ones, never silently read as no."""
    value = os.environ.get(name, "").strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise Failure(
        f"{name}={os.environ[name]!r} is not a yes/no value; "
        f"use one of {', '.join(TRUE_WORDS)} or {', '.join(w for w in FALSE_WORDS if w)}"
    )


# -- the basic commands (status, ping, events, daemon) ------------------------------------


def _add_status(sub: Any) -> None:
    command(
        sub,
        "status",
        "lokid's status, and the project's when inside one (run, queue, breakers, signals)",
        "  lokictl status\n  lokictl status --project ~/app --json",
        where="optional",
    )


def _add_ping(sub: Any) -> None:
    command(sub, "ping", "one round trip to lokid (starts it when it is not running)")


def _add_events(sub: Any) -> None:
    events = command(
        sub,
        "events",
        "print lokid's events as they happen, until ^C (never times out while quiet)",
        "  lokictl events 'queue.*' 'breaker.*'\n  lokictl events --project . --json\n"
        "  lokictl events --reconnect        keep following across a lokid restart",
    )
    events.add_argument(
        "topics", nargs="*", default=["*"], help="topic globs such as 'queue.*' (default: all)"
    )
    events.add_argument("-f", "--follow", action="store_true", help="(the default) keep following")
    events.add_argument("--project", metavar="PATH", help="only this project's events")
    events.add_argument(
        "--reconnect",
        action="store_true",
        help="when lokid goes away, wait for it to come back and follow on",
    )


def _add_daemon(sub: Any) -> None:
    daemon = command(sub, "daemon", "control lokid itself")
    daemon_sub = daemon.add_subparsers(dest="action", required=True, metavar="ACTION")
    command(daemon_sub, "stop", "stop lokid (requests in flight get its grace period)")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s"


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    """lokid, and the project when run inside one; only projects that still exist."""
    st = client.call("daemon.status")
    st["projects"] = [p for p in st["projects"] if os.path.isdir(p)]
    text = (
        f"lokid {st['version']} (pid {st['pid']}), up {_duration(st['uptime_s'])}\n"
        f"connections: {st['connections']}\nprojects: {', '.join(st['projects']) or 'none'}"
    )
    if args.project:
        from lokictl._project_cli import project_status_text

        project = client.call("project.status", {"project": args.project})
        st = {"daemon": st, "project": project}
        return out(args, st, lambda: text + "\n\n" + project_status_text(project, args))
    return out(args, st, text)


def cmd_ping(client: Client, args: argparse.Namespace) -> int:
    start = time.perf_counter()
    reply = client.call("ping")
    ms = (time.perf_counter() - start) * 1000
    return out(args, {"time": reply["time"], "rtt_ms": round(ms, 3)}, f"pong in {ms:.3f} ms")


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    from lokictl._stream import follow_events

    return follow_events(client, args)


def cmd_daemon(client: Client, args: argparse.Namespace) -> int:
    client.call("daemon.shutdown")
    return out(args, {"stopping": True}, "lokid is stopping")


# -- the other areas: their modules are imported only when used -----------------------------


def _lazy_command(module: str, table: str) -> Command:
    def run(client: Client, args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module), table)[args.command](client, args)

    return run


def _lazy_builder(module: str, name: str) -> Callable[[Any], None]:
    def build(sub: Any) -> None:
        import importlib

        getattr(importlib.import_module(module), name)(sub)

    return build


_QUEUE = "lokictl._queue_cli"
_PROJECT = "lokictl._project_cli"
_RUN = "lokictl._run_cli"
_TOOLS = "lokictl._tools_cli"
_MIGRATION = "lokictl._migration_cli"
_WORK = "lokictl._work_cli"

COMMANDS: dict[str, Command] = {
    "status": cmd_status,
    "ping": cmd_ping,
    "events": cmd_events,
    "daemon": cmd_daemon,
    **dict.fromkeys(("queue", "dlq", "breakers"), _lazy_command(_QUEUE, "QUEUE_COMMANDS")),
    **dict.fromkeys(
        ("project", "pause", "resume", "stop", "init"), _lazy_command(_PROJECT, "PROJECT_COMMANDS")
    ),
    **dict.fromkeys(("run", "image"), _lazy_command(_RUN, "RUN_COMMANDS")),
    "top": _lazy_command(_TOOLS, "TOOL_COMMANDS"),
    "migration": _lazy_command(_MIGRATION, "MIGRATION_COMMANDS"),
    "work": _lazy_command(_WORK, "WORK_COMMANDS"),
}

# Commands that run without a connection made for them (they make their own, or none).
OFFLINE = {"info", "completion", "man"}

_queue_builder = _lazy_builder(_QUEUE, "add_queue_commands")
_project_builder = _lazy_builder(_PROJECT, "add_project_commands")
_run_builder = _lazy_builder(_RUN, "add_run_commands")
_tools_builder = _lazy_builder(_TOOLS, "add_tool_commands")
_migration_builder = _lazy_builder(_MIGRATION, "add_migration_commands")
_work_builder = _lazy_builder(_WORK, "add_work_command")

BRANCHES: dict[str, Callable[[Any], None]] = {
    "status": _add_status,
    "ping": _add_ping,
    "events": _add_events,
    "daemon": _add_daemon,
    **dict.fromkeys(("queue", "dlq", "breakers"), _queue_builder),
    **dict.fromkeys(("project", "pause", "resume", "stop", "init"), _project_builder),
    **dict.fromkeys(("run", "image"), _run_builder),
    **dict.fromkeys(("top", "info", "completion", "man"), _tools_builder),
    "migration": _migration_builder,
    "work": _work_builder,
}


def full_parser() -> argparse.ArgumentParser:
    """Every command's parser with every option shown (completion, man page, suggestions)."""
    return _parser(["--all-commands"], showing=True)


_command.TREE = full_parser  # for the modules that show the whole tree (completion, help)


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args: argparse.Namespace | None = None
    try:
        found, words = split_globals(list(sys.argv[1:] if argv is None else argv))
        words = _preprocess(words)
        version = found.pop("v")
        args = argparse.Namespace(**found)  # errors from here on know about --json
        if version and "-h" not in words and "--help" not in words:
            from lokid import __version__

            print(f"lokictl {__version__}")
            return EXIT_OK
        if words[:1] == ["__complete"]:
            from lokictl._tools_cli import complete_words

            return complete_words(words[1:])
        args = _parser(words).parse_args(words, argparse.Namespace(**found))
        return _run(args)
    except Failure as exc:
        report_error(args, exc.message, exc.kind)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `lokictl queue list | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    if args.no_spawn is None:
        args.no_spawn = env_flag("LOKICTL_NO_SPAWN")
    if getattr(args, "where", None):
        args.project = project_of(args, required=args.where == "required")
    if args.command in OFFLINE:
        from lokictl._tools_cli import TOOL_COMMANDS

        return TOOL_COMMANDS[args.command](None, args)
    return connect_and_run(args, COMMANDS[args.command])


def connect_and_run(args: argparse.Namespace, run: Command) -> int:
    spawn = not args.no_spawn and args.command != "daemon"
    timeout = request_timeout()
    try:
        with Client.connect(args.socket, spawn=spawn, timeout=timeout) as client:
            return run(client, args)
    except NotRunning as exc:
        if args.command == "daemon":
            return out(args, {"stopping": False}, "lokid is not running")
        report_error(args, str(exc), "not_running")
        return EXIT_NOT_RUNNING
    except DaemonError as exc:
        text = exc.message if wants_json(args) else f"{exc.code}: {exc.message}"
        report_error(args, text, exc.code, exc.data)
        return EXIT_ERROR
    except TimeoutError:
        report_error(args, "lokid did not answer in time (it may be overloaded or hung)", "lost")
        return EXIT_LOST
    except (ProtocolError, ConnectionError) as exc:
        report_error(args, f"connection to lokid lost: {exc}", "lost")
        return EXIT_LOST
    except PermissionError as exc:
        report_error(args, f"cannot reach lokid: {exc}", "not_running")
        return EXIT_NOT_RUNNING


if __name__ == "__main__":
    sys.exit(main())
