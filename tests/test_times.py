"""Times on the wire: the cached second must never leak into another second."""

import random
from datetime import UTC, datetime

from lokid.wire.times import iso, parse_iso


def reference(ts: float) -> str:
    whole = int(ts // 1)
    text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{int((ts - whole) * 1000):03d}Z"


def test_iso_matches_a_plain_formatting_in_any_order_of_times():
    rng = random.Random(7)
    base = 1_795_248_317.0
    times = [base + rng.uniform(-3, 3) for _ in range(2000)] + [0.0, 1.9996, base, base - 0.0004]
    for ts in times:
        assert iso(ts) == reference(ts)
        assert abs(parse_iso(iso(ts)) - ts) < 0.001
