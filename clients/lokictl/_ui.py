"""What lokictl prints: JSON (whole, some fields, or through jq), text with colour and
times people read, and errors as one line (or one JSON object with `--json`).

Standard library and msgspec only: every command imports this.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

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
        from lokictl._select import pick, through_jq

        value = pick(value, fields) if fields else value
        if jq:
            through_jq(jq, value)
            return
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
