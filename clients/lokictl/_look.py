"""What people see on a terminal: colour by meaning and times they read ("in 4m").

Standard library only; imported by the commands that print states or times.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from lokictl._base import wants_json

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
