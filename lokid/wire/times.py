"""Times on the wire and in files: ISO-8601 UTC strings, as Loki Mode writes them."""

import time
from datetime import UTC, datetime

_last_second: tuple[int, str] = (-1, "")


def iso(ts: float) -> str:
    """Epoch seconds to `2026-11-21T05:34:24.123Z` (millisecond precision).

    Every queue transition stamps a time or two; the formatted second is reused
    while it lasts (strftime is most of the cost).
    """
    global _last_second
    whole = int(ts // 1)
    second, text = _last_second
    if second != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _last_second = (whole, text)
    return f"{text}.{int((ts - whole) * 1000):03d}Z"


def iso_or_none(ts: float | None) -> str | None:
    return None if ts is None else iso(ts)


def parse_iso(text: str) -> float:
    """Accepts `...Z`, `+00:00` offsets and naive times (taken as UTC)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
