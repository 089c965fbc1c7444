"""`lokid serve`: run the daemon in the foreground (supervisors and lokictl start it)."""

import argparse
import logging
import sys

import trio

from lokid import __version__
from lokid import mcp as mcp_command
from lokid.daemon import Daemon
from lokid.log import configure
from lokid.methods import build_router, queue, runs
from lokid.paths import UnsafePath, resolve_socket_path, state_dir
from lokid.server.listener import AlreadyRunning
from lokid.service import units
from lokid.service.activation import ActivationError, open_listener
from lokid.service.notify import Notifier
from lokid.service.supervise import supervised
from lokid.settings import Settings, env_default
from lokid.watch.area import with_watch

log = logging.getLogger("lokid")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lokid", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lokid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--socket", help="socket path (default: $LOKID_SOCKET, then per-user)")
    serve.add_argument(
        "--log-level",
        default=env_default("LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (env LOKID_LOG_LEVEL; default info)",
    )
    serve.add_argument(
        "--max-frame",
        type=int,
        default=int(env_default("MAX_FRAME", str(16 * 1024 * 1024))),
        help="largest request body in bytes (env LOKID_MAX_FRAME; default 16 MiB)",
    )
    serve.add_argument(
        "--durability",
        default=env_default("DURABILITY", "normal"),
        choices=["normal", "full"],
        help="normal: acknowledged work survives a lokid crash; full: also an OS crash",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        default=float(env_default("SHUTDOWN_GRACE", "5")),
        help="seconds SIGTERM waits for in-flight requests (default 5)",
    )
    serve.add_argument(
        "--spin-us",
        type=float,
        default=float(env_default("SPIN_US", "50")),
        help="microseconds to poll for a client's next request before sleeping (0: off)",
    )
    _add_service_options(sub, serve)
    mcp_command.add_parser(sub)
    return parser


def _add_service_options(sub: argparse._SubParsersAction, serve: argparse.ArgumentParser) -> None:
    """`serve --idle-exit` and `service install|uninstall` (running under systemd or launchd)."""
    serve.add_argument(
        "--idle-exit",
        type=_seconds,
        metavar="SECONDS",
        help="with a socket from systemd/launchd: exit after SECONDS with no clients and no work",
    )
    service = sub.add_parser("service", help="run lokid as a systemd or launchd user service")
    actions = service.add_subparsers(dest="action", required=True)
    install = actions.add_parser("install", help="write the units for this user")
    install.add_argument("--now", action="store_true", help="also enable and start them")
    uninstall = actions.add_parser("uninstall", help="stop, disable and remove the units")
    for parser in (install, uninstall):
        parser.add_argument(
            "--manager", choices=["systemd", "launchd"], default=units.default_manager()
        )


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a number of seconds >= 0")
    return value


def _service(args: argparse.Namespace) -> int:
    return units.run(args.action, args.manager, now=getattr(args, "now", False))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "service":
        return _service(args)
    if args.command == "mcp":
        return mcp_command.run(args)
    configure(args.log_level)
    try:
        settings = Settings(
            socket=resolve_socket_path(args.socket),
            state_dir=state_dir(),
            log_level=args.log_level,
            max_frame=args.max_frame,
            durability=args.durability,
            shutdown_grace=args.shutdown_grace,
            spin_us=args.spin_us,
            outbox_limit=int(env_default("OUTBOX_LIMIT", str(4 * 1024 * 1024))),
            view_delay=float(env_default("VIEW_DELAY", "0.05")),
            completed_keep=int(env_default("COMPLETED_KEEP", "500")),
            watch_step_ms=int(env_default("WATCH_STEP_MS", "5")),
            watch_debounce_ms=int(env_default("WATCH_DEBOUNCE_MS", "200")),
            stop_signal_grace=float(env_default("STOP_SIGNAL_GRACE", "10")),
        )
        listener = open_listener(settings.socket, args.idle_exit)
    except (UnsafePath, AlreadyRunning, ActivationError) as exc:
        print(f"lokid: {exc}", file=sys.stderr)
        return 1
    daemon = build_daemon(settings)
    trio.run(supervised, daemon, listener, Notifier.from_env(), args.idle_exit)
    return 0


def build_daemon(settings: Settings) -> Daemon:
    return with_watch(runs.with_runs(queue.with_queues(Daemon(settings, build_router()))))


if __name__ == "__main__":
    sys.exit(main())
