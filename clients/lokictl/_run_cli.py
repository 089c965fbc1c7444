"""lokictl run start|stop|status|logs|list, image update: Loki Mode runs in containers.

Long requests (a pull, a stop's grace) wait as long as they take, with progress on a
terminal (rich, imported only then) and nothing extra in a pipe or with --json. `run start`
then makes sure Loki Mode's dashboard runs on the host (lokictl._dashboard).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from lokictl._base import NOT_A_PROJECT, Failure, out, wants_json
from lokictl._client import Client
from lokictl._look import style_for
from lokid.secret_env import secrets_in

if TYPE_CHECKING:
    from lokictl._dashboard import Dashboard


def add_run_commands(sub: Any) -> None:
    from lokictl._command import command

    run = command(sub, "run", "Loki Mode runs in containers, one per project")
    r = run.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = command(
        r,
        "start",
        "pull the image and start the project's run (progress on a terminal)",
        "  lokictl run start\n  lokictl run start -- start --quick\n"
        "  lokictl run start --no-pull -e LOKI_MAX_ITERATIONS=3\n"
        "  LOKI_NO_AUTO_OPEN=1 lokictl run start   the host dashboard, no browser\n\n"
        "Then Loki Mode's dashboard on the host lists the run (the container's own is off):\n"
        "its `loki dashboard start` starts it on port 57374 ($LOKI_DASHBOARD_PORT) or the\n"
        "next free one, or finds it running; a browser opens on it when stdout is a\n"
        "terminal, the run is not in the background (--bg, -d) and LOKI_NO_AUTO_OPEN is not 1.",
        "required",
    )
    start.add_argument("--image", help="image (default: LOKI_DOCKER_IMAGE of lokid)")
    start.add_argument("--api", action="store_true", help=argparse.SUPPRESS)  # deprecated
    start.add_argument("--no-pull", action="store_true", help="skip the pull and the prune")
    start.add_argument(
        "--no-dashboard", action="store_true", help="do not start or open the host dashboard"
    )
    start.add_argument(
        "-e", "--env", action="append", default=[], metavar="KEY=VALUE", help="container env"
    )
    start.add_argument("args", nargs="*", help="loki's arguments (default: start); put -- first")
    stop = command(
        r,
        "stop",
        "stop and remove the project's run (a spinner counts the grace on a terminal)",
        "  lokictl run stop\n  lokictl run stop --all --grace 3",
        "optional",
    )
    stop.add_argument("--all", action="store_true", help="every run lokid or Loki Mode started")
    stop.add_argument(
        "--grace", type=float, metavar="SECONDS", help="seconds before SIGKILL (default: lokid's)"
    )
    command(r, "status", "the project's run", where="required")
    command(r, "list", "every run, of every project")
    logs = command(
        r, "logs", "the run's output", "  lokictl run logs -n 50\n  lokictl run logs -f", "required"
    )
    logs.add_argument("-n", "--tail", type=int, metavar="N", help="the last N lines only")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="follow until the run ends (or ^C)"
    )
    image = command(sub, "image", "the Loki Mode image")
    i = image.add_subparsers(dest="action", required=True, metavar="ACTION")
    update = command(i, "update", "pull the image, then prune its older ones (with progress)")
    update.add_argument("--image", help="image (default: LOKI_DOCKER_IMAGE of lokid)")


def _run_line(run: dict[str, Any], style: Any) -> str:
    port = f" port {run['port']}" if run["port"] else ""
    code = f" exit {run['exit_code']}" if run["exit_code"] is not None else ""
    return f"{run['container']} {style(run['state'])}{code}{port} {run['image']} ({run['project']})"


def _start_params(args: argparse.Namespace) -> dict[str, Any]:
    # Secrets set in lokictl's environment go to the container (lokid may have been
    # started from another environment, such as a service manager's).
    env = secrets_in()
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Failure(f"-e wants KEY=VALUE, got {item!r}")
        env[key] = value
    params: dict[str, Any] = {"project": args.project, "args": args.args or ["start"], "env": env}
    if args.image:
        params["image"] = args.image
    if args.no_pull:
        params["pull"] = False
    return params


def _showing_progress(args: argparse.Namespace) -> bool:
    """Progress only for a person: stderr is a terminal and no --json."""
    return sys.stderr.isatty() and not wants_json(args)


def _long_call(
    client: Client,
    args: argparse.Namespace,
    method: str,
    params: dict[str, Any],
    what: str,
    pull_project: str | None,
) -> Any:
    """Send a request that may take minutes and wait for it without a timeout; on a
    terminal, `image.pull` events become per-layer bars and a spinner counts seconds."""
    if not _showing_progress(args):
        return client.wait(client.send(method, params), lambda event: None)
    from lokictl._progress import PullProgress, Spinner

    pulls = method in ("run.start", "image.update")
    if pulls:
        topics = {"topics": ["image.pull"]}
        topics |= {"project": pull_project} if pull_project else {}
        client.call("subscribe", topics)
    with PullProgress(what) if pulls else Spinner(what) as progress:
        return client.wait(client.send(method, params), progress.event)


def cmd_run(client: Client, args: argparse.Namespace) -> int:
    style = style_for(args)
    if args.action == "logs":
        params = {"project": args.project, "tail": args.tail, "follow": args.follow}
        if args.follow:
            from lokictl._stream import follow_logs

            return follow_logs(client, params, args)
        result = client.call("run.logs", params)
        return out(args, result, "\n".join(result["lines"]))
    if args.action == "start":
        return _start(client, args)
    if args.action == "stop":
        return _stop(client, args)
    if args.action == "status":
        r = client.call("run.status", {"project": args.project})
        return out(args, r, lambda: _run_line(r["run"], style) if r["run"] else "no run here")
    r = client.call("run.list")
    return out(args, r, lambda: "\n".join(_run_line(x, style) for x in r["runs"]) or "no runs")


def _start(client: Client, args: argparse.Namespace) -> int:
    if args.api and not wants_json(args):
        print(f"lokictl: warning: --api is ignored: {_API_GONE}", file=sys.stderr)
    params = _start_params(args)
    r = _long_call(client, args, "run.start", params, "starting", args.project)
    for warning in r["warnings"]:
        print(f"lokictl: warning: {warning}", file=sys.stderr)
    text = f"started {r['container']} ({r['image']})"
    if args.no_dashboard:
        return out(args, r, text)
    dash = _host_dashboard(args)
    if dash.url:
        how = "started" if dash.state == "started" else "already running"
        text += f"\ndashboard {dash.url} ({how}{', opened' if dash.opened else ''})"
    elif not wants_json(args):
        kind = "hint" if dash.state == "absent" else "warning"
        print(f"lokictl: {kind}: {dash.message}", file=sys.stderr)
    return out(args, {**r, "dashboard": msgspec.to_builtins(dash)}, text)


_API_GONE = (
    "the container's dashboard stays off and no port is published; Loki Mode's dashboard "
    "on the host lists the run"
)


def _host_dashboard(args: argparse.Namespace) -> Dashboard:
    """Start or reuse Loki Mode's host dashboard (a spinner on a terminal), then open it
    when Loki Mode would."""
    from lokictl import _dashboard

    timeout = os.environ.get("LOKICTL_DASHBOARD_TIMEOUT", "")
    seconds = float(timeout) if timeout.replace(".", "", 1).isdigit() else None
    if _showing_progress(args):
        from lokictl._progress import Spinner

        with Spinner("starting Loki Mode's dashboard"):
            dash = _dashboard.ensure(timeout=seconds)
    else:
        dash = _dashboard.ensure(timeout=seconds)
    if dash.url and _dashboard.wants_browser(args.args or ["start"], os.environ):
        dash.opened = _dashboard.open_browser(dash.url)
    return dash


def _stop(client: Client, args: argparse.Namespace) -> int:
    if args.all:
        params: dict[str, Any] = {"all": True}
    else:
        if args.project is None:
            raise Failure(NOT_A_PROJECT + " (or --all)")
        params = {"project": args.project}
    if args.grace is not None:
        params["grace"] = args.grace
    what = "stopping every run" if args.all else "stopping the run"
    r = _long_call(client, args, "run.stop", params, what, None)
    names = r["stopped"] + r["removed"]
    return out(args, r, f"stopped {', '.join(names)}" if names else "nothing running")


def cmd_image(client: Client, args: argparse.Namespace) -> int:
    params = {"image": args.image} if args.image else {}
    r = _long_call(client, args, "image.update", params, "pulling", None)
    lines = [f"{r['image']} is {r['id'][:19]}", r["message"]]
    if r["kept_in_use"]:
        lines.append(f"kept {len(r['kept_in_use'])} older image(s) a container still uses")
    lines += [f"could not remove {f['id'][:19]}: {f['error']}" for f in r["failed"]]
    return out(args, r, "\n".join(lines))


RUN_COMMANDS = {"run": cmd_run, "image": cmd_image}
