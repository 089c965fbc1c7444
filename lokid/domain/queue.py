"""The queue's rules, as plain functions: keys, priorities, claim order, which transitions
are allowed, backoff and failure outcomes.

No I/O and no clock of their own: `now` and the random source are parameters, so each rule
is tested exactly. A refused transition raises the error its client gets (`Conflict`,
`InvalidParams`).
"""

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Literal

from lokid.errors import Conflict, InvalidParams

MAX_BACKOFF = 3600.0  # seconds; no retry waits longer than an hour
JITTER = 0.10  # up to 10% added at random, so retries of many tasks spread out
RATE_LIMIT_BASE = 60.0  # base of the backoff when a rate-limited error names no wait

PRIORITY_NAMES = {"critical": 10, "high": 8, "medium": 5, "normal": 5, "low": 3}
RATE_LIMIT_MARKERS = ("rate limit", "429", "too many requests", "quota exceeded", "retry-after")
_RETRY_AFTER = re.compile(r"retry[-_ ]after\W{0,3}(\d+(?:\.\d+)?)\s*(ms|s|sec|seconds?)?", re.I)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same bytes for the same payload everywhere.

    ValueError for what JSON cannot hold (msgpack's binary, NaN, infinities): a task is
    a JSON document in Loki Mode's files.
    """
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except TypeError as exc:  # e.g. bytes
        raise ValueError(str(exc)) from None
    return text.encode()


def idempotency_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def normalize_priority(value: int | str | None) -> int:
    """Loki Mode's files say `"high"`; the queue orders by 1-10. Unknown names are normal."""
    if value is None:
        return 5
    if isinstance(value, bool):
        raise ValueError("priority must be 1-10 or a name, not a boolean")
    if isinstance(value, int | float):
        return min(10, max(1, int(value)))
    text = value.strip().lower()
    if text.isdigit():
        return min(10, max(1, int(text)))
    return PRIORITY_NAMES.get(text, 5)


# The names Loki Mode's files and dashboard use for a 1-10 priority (its task board calls
# `priority.toLowerCase()`, so a view must never hold a number there): the lowest priority
# of each band, highest band first.
PRIORITY_BANDS = ((10, "critical"), (8, "high"), (4, "medium"), (1, "low"))

# A task's state in Loki Mode's own words, as its files' `status` field says it.
LOKI_STATUS = {
    "pending": "pending",
    "in-progress": "in_progress",
    "completed": "completed",
    "dead-letter": "failed",
    "cancelled": "cancelled",
}


# `priority_name` of the `priority` column, in SQL (both stores build their files' entries
# in the database: one rule, written once).
PRIORITY_NAME_SQL = (
    "CASE "
    + " ".join(f"WHEN priority >= {lowest} THEN '{name}'" for lowest, name in PRIORITY_BANDS)
    + f" ELSE '{PRIORITY_BANDS[-1][1]}' END"
)


def priority_name(priority: int) -> str:
    """The name of a 1-10 priority in Loki Mode's words (10 critical, 8-9 high, ...)."""
    for lowest, name in PRIORITY_BANDS:
        if priority >= lowest:
            return name
    return PRIORITY_BANDS[-1][1]


def backoff_delay(base: float, attempt: int, rng: random.Random) -> float:
    """`min(base * 2^(attempt-1), 3600)` plus up to 10% jitter; `base` never compounds."""
    capped = min(base * 2 ** max(attempt - 1, 0), MAX_BACKOFF)
    return capped + rng.uniform(0, capped * JITTER)


def is_rate_limited(error: str) -> bool:
    lowered = error.lower()
    return any(marker in lowered for marker in RATE_LIMIT_MARKERS)


# The longest wait a rate limit may impose, from `retryAfter` or an error's text alike.
MAX_RETRY_AFTER = 24 * 3600.0


def parse_retry_after(error: str) -> float | None:
    """`Retry-After: 30`, `retry after 1.5s`, `retry_after=500ms` -> seconds, at most a day
    (an error's text is a server's word, not a promise: `Retry-After: 100000000000`)."""
    match = _RETRY_AFTER.search(error)
    if match is None:
        return None
    seconds = float(match.group(1))
    if (match.group(2) or "").lower() == "ms":
        seconds /= 1000
    if not math.isfinite(seconds):
        return MAX_RETRY_AFTER
    return min(seconds, MAX_RETRY_AFTER)


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    """What a failed attempt does to its task."""

    kind: Literal["retry", "dead-letter", "rate-limited"]
    retries: int  # the task's retries after this attempt
    delay: float  # seconds until it may be claimed again (0 for dead-letter)
    rate_limits: int  # consecutive rate-limited attempts after this one


def decide_failure(
    *,
    retries: int,
    max_retries: int,
    backoff_seconds: float,
    error: str,
    retry_after: float | None,
    rate_limits: int,
    rng: random.Random,
) -> FailureOutcome:
    """The failure path: rate limits wait without counting; others retry, then dead-letter."""
    if retry_after is not None or is_rate_limited(error):
        wait = retry_after if retry_after is not None else parse_retry_after(error)
        if wait is None:
            wait = backoff_delay(RATE_LIMIT_BASE, rate_limits + 1, rng)
        return FailureOutcome("rate-limited", retries, wait, rate_limits + 1)
    retries += 1
    if retries >= max_retries:
        return FailureOutcome("dead-letter", retries, 0.0, 0)
    return FailureOutcome("retry", retries, backoff_delay(backoff_seconds, retries, rng), 0)


# -- claim order -------------------------------------------------------------------------

# Higher priority first, then older (the smaller insertion sequence). `CLAIM_ORDER_SQL` says
# the same to the store, which orders candidates in its index; `claim_key` merges candidates
# the store found in separate statements. A test holds the two together.
CLAIM_ORDER_SQL = "priority DESC, seq"


def claim_key(priority: int, seq: int) -> tuple[int, int]:
    """Sort key of the claim order: the smallest key is claimed first."""
    return (-priority, seq)


# -- which transitions are allowed ---------------------------------------------------------

# A task's idempotency key is taken while it is pending, in progress or completed: a
# dead-lettered or cancelled task does not block its key from coming back.
LIVE_STATES = frozenset({"pending", "in-progress", "completed"})
CANCELLABLE = frozenset({"pending", "in-progress"})

KeyChange = Literal["hold", "release"] | None


def key_change(before: str, after: str) -> KeyChange:
    """What a move from `before` to `after` does to the task's idempotency key."""
    was_live, live = before in LIVE_STATES, after in LIVE_STATES
    if was_live and not live:
        return "release"
    if live and not was_live:
        return "hold"
    return None


def check_held(task_id: str, state: str, holder: str | None, agent: str) -> None:
    """Only the agent holding an in-progress task may heartbeat, complete or fail it."""
    if state != "in-progress":
        raise Conflict(f"task {task_id} is {state}, not in progress")
    if holder != agent:
        raise Conflict(f"task {task_id} is held by {holder!r}, not {agent!r}")


def check_cancellable(task_id: str, state: str) -> None:
    if state not in CANCELLABLE:
        raise Conflict(f"task {task_id} is {state}; only pending or in-progress tasks")


def cascades_to(child_state: str) -> bool:
    """A cancelled task takes its dependents with it while they are still live work."""
    return child_state in CANCELLABLE


def cascade_reason(parent_id: str) -> str:
    return f"Parent {parent_id} cancelled"


def check_dead(task_id: str, state: str) -> None:
    """dlq.retry and dlq.delete act on dead-lettered tasks only."""
    if state != "dead-letter":
        raise Conflict(f"task {task_id} is {state}, not in the dead-letter queue")


def check_decision_report(result: dict[str, Any]) -> None:
    """A completion must say why: `decisionReport` present and not empty."""
    report = result.get("decisionReport")
    if report is None or report in ("", {}, []) or (isinstance(report, str) and not report.strip()):
        raise InvalidParams("result.decisionReport is required; the task stays claimed")
