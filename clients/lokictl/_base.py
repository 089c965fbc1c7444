"""What every lokictl command shares: exit codes and one-line failures, output for
people and for machines, and which project a command is about.

Standard library and msgspec only, one module: `lokictl status` imports it, and each
module imported costs start-up time.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import msgspec

from lokid.paths import absolute_project, find_project

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_LOST = 0, 1, 2, 3, 4

EXIT_CODES = """exit codes:
  0  done
  1  lokid answered with an error (the message names it), or a rejected configuration
  2  bad usage: an unknown command or option, a bad value, not inside a project
  3  lokid is not running (and was not started)
  4  the connection to lokid was lost (lokid stopped or crashed)"""


class Failure(Exception):
    """A mistake or a refusal the user is told about in one line: no traceback."""

    def __init__(self, message: str, code: int = EXIT_USAGE, kind: str = "usage") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.kind = kind


def json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


# -- JSON for machines: --json, --json=FIELDS (lokictl._select), --jq EXPR ---------------


def emit_json(args: argparse.Namespace, value: Any) -> None:
    fields = getattr(args, "json_fields", None)
    jq = getattr(args, "jq", None)
    if fields or jq:
        from lokictl import _select

        try:
            value = _select.pick(value, fields) if fields else value
            if jq:
                _select.through_jq(jq, value)
                return
        except _select.Failure as exc:
            raise Failure(str(exc)) from None
    print(json_text(value), flush=True)


def wants_json(args: argparse.Namespace) -> bool:
    return bool(args.json or getattr(args, "jq", None) or getattr(args, "json_fields", None))


def out(args: argparse.Namespace, value: Any, text: str | Any) -> int:
    """Print `value` as JSON for machines, else `text` (a string, or a callable making
    it, so formatting costs nothing with --json). Returns exit code 0."""
    if wants_json(args):
        emit_json(args, value)
    else:
        print(text() if callable(text) else text, flush=True)
    return EXIT_OK


def report_error(
    args: argparse.Namespace | None, message: str, kind: str, data: Any = None
) -> None:
    """One line on stderr; with --json one JSON object `{error: {code, message, data?}}`."""
    as_json = (
        wants_json(args)
        if args is not None
        else any(a == "--json" or a.startswith("--json=") for a in sys.argv[1:])
    )
    if as_json:
        error: dict[str, Any] = {"code": kind, "message": message}
        if data is not None:
            error["data"] = data
        print(json_text({"error": error}), file=sys.stderr, flush=True)
    else:
        print(f"lokictl: {message}", file=sys.stderr, flush=True)


# -- which project ------------------------------------------------------------------------
# Which project a command is about: `--project` as the user typed it, else the nearest
# folder with a `.loki/` at or above the current one, as git finds its repository.
#
# Only `lokictl init`, `project add` and `queue add --init` make a folder a project;
# everything else outside a project is refused, so a wrong folder never becomes one.

NOT_A_PROJECT = "not inside a Loki Mode project (no .loki/ here or above); run `lokictl init`"
HOME_NOTE = "~/.loki is Loki Mode's global folder, not a project; --project ~ if you mean it"


def cwd() -> str:
    """The current folder as the shell names it (`$PWD`, symlinks kept) when $PWD really
    is this folder; a stale $PWD (a program that changed folder without updating it)
    is not trusted."""
    pwd = os.environ.get("PWD")
    if pwd and os.path.isabs(pwd):
        try:
            if os.path.samefile(pwd, "."):
                return os.path.normpath(pwd)
        except OSError:
            pass
    return os.getcwd()


def typed_path(text: str) -> str:
    """A path as people type it (`.`, `proj/`, `../app`, `~/app`) made absolute and
    normal against the logical current folder: the wire takes only normal paths."""
    text = os.path.expanduser(text)
    return absolute_project(text, {**os.environ, "PWD": cwd()})


def project_of(args: argparse.Namespace, *, required: bool = True) -> str | None:
    """The project for this command: `--project`, else discovery from the current
    folder. A folder without `.loki/` is refused (exit 2) when one is `required`."""
    given = getattr(args, "project", None)
    if given:
        path = typed_path(given)
        if required:
            check_project(path)
        return path
    found = find_project(cwd())  # already absolute: $PWD is not read again
    if found is not None and found == home():
        # ~/.loki is Loki Mode's global folder (dashboard, config): being in $HOME is not
        # asking for it as a project; `--project ~` is.
        if required:
            raise Failure(f"{NOT_A_PROJECT} ({HOME_NOTE})")
        found = None
    if found is None and required:
        raise Failure(NOT_A_PROJECT)
    return found


def home() -> str:
    return os.path.normpath(os.path.expanduser("~"))


def check_project(path: str) -> None:
    if not os.path.isdir(path):
        raise Failure(f"no such folder: {path}")
    if not os.path.isdir(os.path.join(path, ".loki")):
        raise Failure(f"{path} is not a Loki Mode project (no .loki/); run `lokictl init {path}`")


def init_project(path: str) -> bool:
    """Create `path/.loki/`; False when it was there already. Never in $HOME, whose
    `.loki/` is Loki Mode's global folder."""
    if not os.path.isdir(path):
        raise Failure(f"no such folder: {path}")
    if path == home():
        raise Failure(
            f"{path} is your home folder, whose .loki/ is Loki Mode's global folder; "
            "make a project in a folder of its own"
        )
    try:
        os.mkdir(os.path.join(path, ".loki"))
    except FileExistsError:
        return False
    except OSError as exc:
        raise Failure(f"cannot create {path}/.loki: {exc.strerror}", 1, "io") from None
    return True


def request_timeout() -> float:
    """Seconds a request may wait for its reply (`LOKICTL_TIMEOUT`, default 30); live
    streams and long requests (a pull, a stop) are not bound by it."""
    text = os.environ.get("LOKICTL_TIMEOUT") or "30"
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise Failure(f"LOKICTL_TIMEOUT={text!r} is not a positive number of seconds")
    return value
