"""lokictl: the command line for lokid.

Exit codes: 0 done, 1 the daemon answered with an error, 2 bad usage,
3 no daemon (not running and not started), 4 connection lost.
"""

import argparse
import os
import sys
import time
from typing import Any

import msgspec

from lokictl._client import Client, DaemonError, NotRunning, ProtocolError
from lokid.paths import logical_cwd

EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_LOST = 1, 2, 3, 4


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _add_common(parser: argparse.ArgumentParser, defaults: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command; only the top level sets defaults,
    so a subcommand's parser never overwrites what was given before it."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON for machines"
    )
    parser.add_argument(
        "--socket", default=default(None), help="lokid socket path (default: as lokid finds it)"
    )
    parser.add_argument(
        "--no-spawn",
        action="store_true",
        default=default(os.environ.get("LOKICTL_NO_SPAWN") == "1"),
        help="do not start lokid when it is not running (env LOKICTL_NO_SPAWN=1)",
    )
    return parser


def _parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: only the named command's branch is built (every parser
    costs `lokictl status` start-up time); the whole tree for help or a typo."""
    parser = _add_common(argparse.ArgumentParser(prog="lokictl"), True)
    sub = parser.add_subparsers(dest="command", required=True)
    wanted = _command_word(sys.argv[1:] if argv is None else argv)
    builders = [BRANCHES[wanted]] if wanted in BRANCHES else list(dict.fromkeys(BRANCHES.values()))
    common = None
    if any(build not in BASIC for build in builders):
        common = _add_common(argparse.ArgumentParser(add_help=False), False)
    for build in builders:
        build(sub, common)
    return parser


def _command_word(argv: list[str]) -> str | None:
    """The first word that is not an option (nor the value of `--socket`)."""
    words = iter(argv)
    for word in words:
        if word == "--socket":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _basic(sub: Any, name: str, text: str) -> argparse.ArgumentParser:
    return _add_common(sub.add_parser(name, help=text), False)


def _add_status(sub: Any, common: argparse.ArgumentParser | None) -> None:
    status = _basic(sub, "status", "daemon and project status")
    status.add_argument("--project", help="the project folder (default: $PWD if it has .loki/)")


def _add_ping(sub: Any, common: argparse.ArgumentParser | None) -> None:
    _basic(sub, "ping", "round trip to the daemon")


def _add_events(sub: Any, common: argparse.ArgumentParser | None) -> None:
    events = _basic(sub, "events", "print events until ^C")
    events.add_argument("topics", nargs="*", default=["*"], help="topic globs (default *)")
    events.add_argument("-f", "--follow", action="store_true", help="(default) keep following")
    events.add_argument("--project", help="only events of this project")


def _add_daemon(sub: Any, common: argparse.ArgumentParser | None) -> None:
    daemon = _basic(sub, "daemon", "control the daemon")
    daemon_sub = daemon.add_subparsers(dest="action", required=True)
    _add_common(daemon_sub.add_parser("stop", help="stop lokid"), False)


BASIC = frozenset({_add_status, _add_ping, _add_events, _add_daemon})


def _print(args: argparse.Namespace, value: Any, text: str) -> None:
    print(_json(value) if args.json else text, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s"


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    """The daemon, and the project when run inside one (a folder with .loki/)."""
    st = client.call("daemon.status")
    projects = ", ".join(st["projects"]) or "none"
    text = (
        f"lokid {st['version']} (pid {st['pid']}), up {_duration(st['uptime_s'])}\n"
        f"connections: {st['connections']}\nprojects: {projects}"
    )
    path = args.project or logical_cwd()
    if args.project or os.path.isdir(os.path.join(path, ".loki")):
        from lokictl._project_cli import project_status_text

        project = client.call("project.status", {"project": path})
        st = {"daemon": st, "project": project}
        text += "\n\n" + project_status_text(project)
    _print(args, st, text)
    return 0


def cmd_ping(client: Client, args: argparse.Namespace) -> int:
    start = time.perf_counter()
    reply = client.call("ping")
    ms = (time.perf_counter() - start) * 1000
    _print(args, {"time": reply["time"], "rtt_ms": round(ms, 3)}, f"pong in {ms:.3f} ms")
    return 0


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    client.call("subscribe", {"topics": args.topics, "project": args.project})
    try:
        for event in client.events():
            if args.json:
                print(_json(event), flush=True)
            else:
                where = f" [{event['project']}]" if event["project"] else ""
                data = _json(event["data"]) if event["data"] is not None else ""
                print(f"{event['time']} {event['topic']}{where} {data}".rstrip(), flush=True)
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_daemon(client: Client, args: argparse.Namespace) -> int:
    client.call("daemon.shutdown")
    _print(args, {"stopping": True}, "lokid is stopping")
    return 0


COMMANDS = {"status": cmd_status, "ping": cmd_ping, "events": cmd_events, "daemon": cmd_daemon}


# -- container runs: run start|stop|status|logs|list, image update --------------------------

# Passed to the container when set in lokictl's environment (lokid may have been started
# from another one, such as a service manager's).
RUN_SECRETS = ("ANTHROPIC_API_KEY", "GITHUB_TOKEN", "GH_TOKEN")


def _project() -> str:
    return logical_cwd()


def _add_run_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    run = sub.add_parser("run", parents=[common], help="Loki Mode runs in containers")
    run_sub = run.add_subparsers(dest="action", required=True)
    start = run_sub.add_parser("start", parents=[common], help="start this folder's run")
    start.add_argument("--image", help="image (default: LOKI_DOCKER_IMAGE of lokid)")
    start.add_argument("--api", action="store_true", help="publish the dashboard port")
    start.add_argument("--no-pull", action="store_true", help="skip pull and prune")
    start.add_argument(
        "-e", "--env", action="append", default=[], metavar="KEY=VALUE", help="container env"
    )
    start.add_argument("args", nargs="*", help="loki arguments (default: start); put -- first")
    stop = run_sub.add_parser("stop", parents=[common], help="stop and remove the run")
    stop.add_argument("--all", action="store_true", help="every run lokid or Loki Mode started")
    stop.add_argument("--grace", type=float, help="seconds before SIGKILL (default: lokid's)")
    run_sub.add_parser("status", parents=[common], help="this folder's run")
    run_sub.add_parser("list", parents=[common], help="every run")
    logs = run_sub.add_parser("logs", parents=[common], help="the run's output")
    logs.add_argument("-n", "--tail", type=int, help="last N lines only")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until the run ends")
    image = sub.add_parser("image", parents=[common], help="the Loki Mode image")
    image_sub = image.add_subparsers(dest="action", required=True)
    update = image_sub.add_parser("update", parents=[common], help="pull, then prune old ones")
    update.add_argument("--image", help="image (default: LOKI_DOCKER_IMAGE of lokid)")


def _run_line(run: dict[str, Any]) -> str:
    port = f" port {run['port']}" if run["port"] else ""
    code = f" exit {run['exit_code']}" if run["exit_code"] is not None else ""
    return f"{run['container']} {run['state']}{code}{port} {run['image']} ({run['project']})"


def _start_params(args: argparse.Namespace) -> dict[str, Any]:
    env = {k: os.environ[k] for k in RUN_SECRETS if os.environ.get(k)}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"lokictl: -e wants KEY=VALUE, got {item!r}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        env[key] = value
    params: dict[str, Any] = {"project": _project(), "args": args.args or ["start"], "env": env}
    if args.image:
        params["image"] = args.image
    if args.api:
        params["api"] = True
    if args.no_pull:
        params["pull"] = False
    return params


def _run_logs(client: Client, args: argparse.Namespace) -> int:
    params = {"project": _project(), "tail": args.tail, "follow": args.follow}
    if not args.follow:
        result = client.call("run.logs", params)
        _print(args, result, "\n".join(result["lines"]))
        return 0
    msgid = client.send("run.logs", params)
    try:
        while True:
            event = client.next_event()
            data = event["data"] or {}
            if event["topic"] != "run.log" or data.get("id") != msgid:
                continue
            if data.get("end"):
                break
            print(_json(event) if args.json else data["line"], flush=True)
    except KeyboardInterrupt:
        client.cancel(msgid)
        return 0
    client.result(msgid)
    return 0


def cmd_run(client: Client, args: argparse.Namespace) -> int:
    if args.action == "logs":
        return _run_logs(client, args)
    if args.action == "start":
        r = client.call("run.start", _start_params(args))
        for warning in r["warnings"]:
            print(f"lokictl: warning: {warning}", file=sys.stderr)
        port = f", dashboard on port {r['port']}" if r["port"] else ""
        _print(args, r, f"started {r['container']} ({r['image']}){port}")
    elif args.action == "stop":
        params = {"all": True} if args.all else {"project": _project()}
        if args.grace is not None:
            params["grace"] = args.grace
        r = client.call("run.stop", params)
        names = r["stopped"] + r["removed"]
        _print(args, r, f"stopped {', '.join(names)}" if names else "nothing running")
    elif args.action == "status":
        r = client.call("run.status", {"project": _project()})
        _print(args, r, _run_line(r["run"]) if r["run"] else "no run for this folder")
    else:
        r = client.call("run.list")
        _print(args, r, "\n".join(_run_line(x) for x in r["runs"]) or "no runs")
    return 0


def cmd_image(client: Client, args: argparse.Namespace) -> int:
    r = client.call("image.update", {"image": args.image} if args.image else {})
    lines = [f"{r['image']} is {r['id'][:19]}", r["message"]]
    if r["kept_in_use"]:
        lines.append(f"kept {len(r['kept_in_use'])} older image(s) a container still uses")
    lines += [f"could not remove {f['id'][:19]}: {f['error']}" for f in r["failed"]]
    _print(args, r, "\n".join(lines))
    return 0


COMMANDS.update(run=cmd_run, image=cmd_image)


# The queue and project commands live in their own modules, imported only when used:
# `lokictl status` should not pay for them.
def _queue_command(client: Client, args: argparse.Namespace) -> int:
    from lokictl._queue_cli import QUEUE_COMMANDS

    return QUEUE_COMMANDS[args.command](client, args)


def _project_command(client: Client, args: argparse.Namespace) -> int:
    from lokictl._project_cli import PROJECT_COMMANDS

    return PROJECT_COMMANDS[args.command](client, args)


def _add_queue_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    from lokictl._queue_cli import add_queue_commands

    add_queue_commands(sub, common)


def _add_project_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    from lokictl._project_cli import add_project_commands

    add_project_commands(sub, common)


def _add_migration_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    from lokictl._migration_cli import add_migration_commands, cmd_migration

    add_migration_commands(sub, common)
    COMMANDS["migration"] = cmd_migration  # the command runs only where its parser was built


def _add_work_command(sub: Any, common: argparse.ArgumentParser) -> None:
    from lokictl._work_cli import add_work_command, cmd_work

    add_work_command(sub, common)
    COMMANDS["work"] = cmd_work


COMMANDS.update(dict.fromkeys(("queue", "dlq", "breakers"), _queue_command))
COMMANDS.update(dict.fromkeys(("project", "pause", "resume", "stop"), _project_command))

# -- end of container runs ------------------------------------------------------------------


BRANCHES = {
    "status": _add_status,
    "ping": _add_ping,
    "events": _add_events,
    "daemon": _add_daemon,
    **dict.fromkeys(("run", "image"), _add_run_commands),
    **dict.fromkeys(("queue", "dlq", "breakers"), _add_queue_commands),
    **dict.fromkeys(("project", "pause", "resume", "stop"), _add_project_commands),
    "migration": _add_migration_commands,
    "work": _add_work_command,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser(argv).parse_args(argv)
    spawn = not args.no_spawn and args.command != "daemon"
    try:
        with Client.connect(args.socket, spawn=spawn) as client:
            return COMMANDS[args.command](client, args)
    except NotRunning as exc:
        if args.command == "daemon":
            _print(args, {"stopping": False}, "lokid is not running")
            return 0
        print(f"lokictl: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except DaemonError as exc:
        print(f"lokictl: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except (ProtocolError, ConnectionError) as exc:
        print(f"lokictl: connection to lokid lost: {exc}", file=sys.stderr)
        return EXIT_LOST
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
