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

EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_LOST = 1, 2, 3, 4


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _common(defaults: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command; only the top level sets defaults,
    so a subcommand's parser never overwrites what was given before it."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON for machines"
    )
    common.add_argument(
        "--socket", default=default(None), help="lokid socket path (default: as lokid finds it)"
    )
    common.add_argument(
        "--no-spawn",
        action="store_true",
        default=default(os.environ.get("LOKICTL_NO_SPAWN") == "1"),
        help="do not start lokid when it is not running (env LOKICTL_NO_SPAWN=1)",
    )
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lokictl", parents=[_common(True)])
    common = _common(False)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", parents=[common], help="daemon status")
    sub.add_parser("ping", parents=[common], help="round trip to the daemon")
    events = sub.add_parser("events", parents=[common], help="print events until ^C")
    events.add_argument("topics", nargs="*", default=["*"], help="topic globs (default *)")
    events.add_argument("-f", "--follow", action="store_true", help="(default) keep following")
    events.add_argument("--project", help="only events of this project")
    daemon = sub.add_parser("daemon", parents=[common], help="control the daemon")
    daemon_sub = daemon.add_subparsers(dest="action", required=True)
    daemon_sub.add_parser("stop", parents=[common], help="stop lokid")
    return parser


def _print(args: argparse.Namespace, value: Any, text: str) -> None:
    print(_json(value) if args.json else text, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s"


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    st = client.call("daemon.status")
    projects = ", ".join(st["projects"]) or "none"
    text = (
        f"lokid {st['version']} (pid {st['pid']}), up {_duration(st['uptime_s'])}\n"
        f"connections: {st['connections']}\nprojects: {projects}"
    )
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
