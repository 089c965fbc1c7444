"""`lokid serve`: run the daemon in the foreground (supervisors and lokictl start it)."""

import argparse
import logging
import sys

import trio

from lokid import __version__
from lokid.daemon import Daemon
from lokid.log import configure
from lokid.methods import build_router
from lokid.paths import UnsafePath, resolve_socket_path, state_dir
from lokid.server.listener import AlreadyRunning, Listener
from lokid.settings import Settings, env_default

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure(args.log_level)
    try:
        settings = Settings(
            socket=resolve_socket_path(args.socket),
            state_dir=state_dir(),
            log_level=args.log_level,
            max_frame=args.max_frame,
            durability=args.durability,
            shutdown_grace=args.shutdown_grace,
        )
        listener = Listener.bind(settings.socket)
    except (UnsafePath, AlreadyRunning) as exc:
        print(f"lokid: {exc}", file=sys.stderr)
        return 1
    daemon = build_daemon(settings)
    trio.run(daemon.serve, listener)
    return 0


def build_daemon(settings: Settings) -> Daemon:
    return Daemon(settings, build_router())


if __name__ == "__main__":
    sys.exit(main())
