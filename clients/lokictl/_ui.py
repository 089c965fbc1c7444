"""What lokictl prints: JSON (whole, some fields, or through jq), text with colour and
times people read, and errors as one line (or one JSON object with `--json`).

Standard library and msgspec only: every command imports this.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
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


# -- JSON for machines: --json, --json=FIELDS, --jq EXPR ----------------------------------

LIST_KEYS = ("tasks", "projects", "runs", "results", "cancelled")


def _dig(value: Any, field: str) -> Any:
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _flatten(value: dict[str, Any]) -> dict[str, Any]:
    """`{task, state}` (queue get/claim) read as one task with its state."""
    if isinstance(value.get("task"), dict):
        return {**value["task"], **{k: v for k, v in value.items() if k != "task"}}
    return value


def pick(value: Any, fields: list[str]) -> Any:
    """Only `fields` (dotted paths) of a result: of each item when it is a listing,
    as gh's `--json FIELDS` does. An unknown field is a usage error naming the known."""
    if isinstance(value, list):
        return [pick(item, fields) for item in value]
    if not isinstance(value, dict):
        return value
    flat = _flatten(value)
    if not any(f.split(".")[0] in flat for f in fields):
        lists = [k for k in LIST_KEYS if isinstance(value.get(k), list)]
        if len(lists) == 1:
            return pick(value[lists[0]], fields)
    known = set(flat)
    unknown = [f for f in fields if f.split(".")[0] not in known]
    if unknown and flat:
        raise Failure(f"unknown JSON field {unknown[0]!r}; available: {', '.join(sorted(known))}")
    return {f: _dig(flat, f) for f in fields}


def emit_json(args: argparse.Namespace, value: Any) -> None:
    fields = getattr(args, "json_fields", None)
    if fields:
        value = pick(value, fields)
    jq = getattr(args, "jq", None)
    if jq:
        _through_jq(jq, value)
        return
    print(json_text(value), flush=True)


def _through_jq(expr: str, value: Any) -> None:
    """`--jq EXPR` as gh has it, through the jq program (an argv list, never a shell)."""
    import shutil
    import subprocess

    jq = shutil.which("jq")
    if jq is None:
        raise Failure("--jq needs the jq program on PATH (or use --json=FIELDS)")
    sys.stdout.flush()
    done = subprocess.run([jq, "-r", expr], input=json_text(value), text=True, check=False)
    if done.returncode != 0:
        raise Failure(f"jq rejected the expression {expr!r}")


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


# -- colour -------------------------------------------------------------------------------

_COLOURS = {
    "pending": "33",
    "in-progress": "36",
    "completed": "32",
    "dead-letter": "31",
    "cancelled": "2",
    "closed": "32",
    "open": "1;31",
    "half-open": "33",
    "running": "32",
    "exited": "2",
    "paused": "33",
    "stopping": "31",
    "missing": "31",
    "bold": "1",
    "dim": "2",
    "error": "31",
}


def use_colour(args: argparse.Namespace | None, stream: Any = None) -> bool:
    """On a terminal, unless NO_COLOR is set (any value, no-color.org), TERM is dumb,
    or --no-color was given."""
    stream = stream or sys.stdout
    if args is not None and getattr(args, "no_color", False):
        return False
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stream.isatty()


class Style:
    """Colours a word by what it means (a state, a breaker) when colour is on."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __call__(self, text: str, meaning: str | None = None) -> str:
        code = _COLOURS.get(meaning or text)
        return f"\033[{code}m{text}\033[0m" if self.on and code else text

    def pad(self, text: str, width: int, meaning: str | None = None) -> str:
        """`text` coloured and padded to `width` columns (escapes take no column)."""
        return self(text, meaning) + " " * max(0, width - len(text))


# -- times ----------------------------------------------------------------------------------


def parse_iso(text: str) -> float:
    """Seconds since the epoch of the wire's `2026-11-21T05:34:24.123Z`."""
    import calendar

    base, _, frac = text.rstrip("Z").partition(".")
    secs = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return secs + (float("0." + frac) if frac else 0.0)


def span(seconds: float) -> str:
    """A duration as people say it: 45s, 4m, 3h, 2d."""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


class Clock:
    """Times for people on a terminal ("in 4m", "3h ago", local clock time); the wire's
    ISO text otherwise, so a pipe or a script sees exactly what lokid sent."""

    def __init__(self, human: bool, now: float | None = None) -> None:
        self.human = human
        self.now = time.time() if now is None else now

    def ago(self, iso: str | None) -> str:
        if not iso:
            return "-"
        if not self.human:
            return iso
        delta = parse_iso(iso) - self.now
        if abs(delta) < 1:
            return "now"
        return f"in {span(delta)}" if delta > 0 else f"{span(delta)} ago"

    def at(self, iso: str | None) -> str:
        """Local clock time (with the date when it is not today), then relative."""
        if not iso:
            return "-"
        if not self.human:
            return iso
        when = parse_iso(iso)
        local = time.localtime(when)
        same_day = time.localtime(self.now)[:3] == local[:3]
        clock = time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", local)
        return f"{clock} ({self.ago(iso)})"

    def clock(self, iso: str | None) -> str:
        """Only the local clock time (`12:04`), for short notes like "until 12:04"."""
        if not iso:
            return "-"
        if not self.human:
            return iso
        local = time.localtime(parse_iso(iso))
        same_day = time.localtime(self.now)[:3] == local[:3]
        return time.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M", local)


def clock_for(args: argparse.Namespace) -> Clock:
    return Clock(sys.stdout.isatty() and not wants_json(args))


def style_for(args: argparse.Namespace) -> Style:
    return Style(use_colour(args))
