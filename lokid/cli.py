"""`lokid serve`: run the daemon in the foreground (supervisors and lokictl start it);
`lokid service install|uninstall`: run it as a systemd or launchd user service."""

from __future__ import annotations

import argparse
import functools
import sys

import trio

from lokid import __version__
from lokid import mcp as mcp_command
from lokid.errors import StartupError
from lokid.log import configure
from lokid.paths import resolve_socket_path, state_dir
from lokid.service import units
from lokid.settings import DURABILITIES, LOG_LEVELS, BadSetting, load, microseconds, seconds, size


def _option(parser_fn):
    """An argparse type that reports a bad value the way the environment's are reported."""

    def convert(text: str):
        try:
            return parser_fn(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {exc}") from exc

    return convert


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lokid", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lokid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--socket", help="socket path (default: $LOKID_SOCKET, then per-user)")
    serve.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="log verbosity (env LOKID_LOG_LEVEL; default info)",
    )
    serve.add_argument(
        "--max-frame",
        type=_option(size),
        help="largest request body, bytes or 16MiB (env LOKID_MAX_FRAME; default 16 MiB)",
    )
    serve.add_argument(
        "--durability",
        choices=DURABILITIES,
        help="normal: acknowledged work survives a lokid crash; full: also an OS crash "
        "(env LOKID_DURABILITY; default normal)",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=_option(seconds),
        help="seconds SIGTERM waits for in-flight requests (env LOKID_SHUTDOWN_GRACE; default 5)",
    )
    serve.add_argument(
        "--spin-us",
        type=_option(microseconds),
        help="microseconds to poll for a client's next request before sleeping; 0: off "
        "(env LOKID_SPIN_US; default 50)",
    )
    _add_service_options(sub, serve)
    mcp_command.add_parser(sub)
    return parser


def _add_service_options(sub: argparse._SubParsersAction, serve: argparse.ArgumentParser) -> None:
    """`serve --idle-exit` and `service install|uninstall` (running under systemd or launchd)."""
    serve.add_argument(
        "--idle-exit",
        type=_option(seconds),
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


def _service(args: argparse.Namespace) -> int:
    return units.run(args.action, args.manager, now=getattr(args, "now", False))


def _serve(args: argparse.Namespace) -> int:
    from lokid.app import build_app, build_daemon
    from lokid.service.choose import open_listener
    from lokid.service.notify import Notifier
    from lokid.service.supervise import supervised

    given = {
        "log_level": args.log_level,
        "max_frame": args.max_frame,
        "durability": args.durability,
        "shutdown_grace": args.shutdown_grace,
        "spin_us": args.spin_us,
    }
    try:
        settings = load(resolve_socket_path(args.socket), state_dir(), given)
        configure(settings.log_level)
        listener = open_listener(settings.socket, args.idle_exit)
    except StartupError as exc:
        print(f"lokid: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, BadSetting) else 1
    notifier = Notifier.from_env()
    app = build_app(settings)
    daemon = build_daemon(app, listener=listener, notifier=notifier, idle_after=args.idle_exit)
    serve = functools.partial(daemon.serve, listener)
    trio.run(supervised, serve, app.lifecycle, notifier, app.summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "service":
        return _service(args)
    if args.command == "mcp":
        return mcp_command.run(args)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
