"""The circuit breaker of one task type: closed -> open -> half-open -> closed.

Pure transitions over a `Breaker` record; each returns the topics of the events
it caused. Times are wall-clock seconds passed in by the caller.
"""

from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half-open"]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int = 5
    cooldown_seconds: float = 300.0
    half_open_after: float = 60.0
    half_open_requests: int = 1


@dataclass(slots=True)
class Breaker:
    state: BreakerState = "closed"
    failures: int = 0
    last_failure: float | None = None
    opened_at: float | None = None
    half_open_at: float | None = None
    forced: bool = False  # tripped by hand: stays open until reset
    reason: str | None = None
    probes: int = 0  # half-open probe claims in flight (not stored: recounted from tasks)


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    probe: bool = False
    state: BreakerState = "closed"
    until: float | None = None  # when an open breaker turns half-open (None: not by itself)


def half_open_due(b: Breaker, cfg: BreakerConfig, now: float) -> bool:
    """An open breaker (not forced) whose `halfOpenAfter` has passed."""
    if b.state != "open" or b.forced or b.opened_at is None:
        return False
    return now >= b.opened_at + cfg.half_open_after


def advance(b: Breaker, cfg: BreakerConfig, now: float) -> list[str]:
    """Let time pass: an open breaker past `halfOpenAfter` is half-open."""
    if half_open_due(b, cfg, now):
        b.state = "half-open"
        b.half_open_at = b.opened_at + cfg.half_open_after  # type: ignore[operator]
        b.probes = 0
        return ["breaker.half-open"]
    return []


def admit(b: Breaker, cfg: BreakerConfig) -> Admission:
    """May a claim of this type go ahead (call `advance` first)?"""
    if b.state == "closed":
        return Admission(True)
    if b.state == "open":
        until = None if b.forced or b.opened_at is None else b.opened_at + cfg.half_open_after
        return Admission(False, state="open", until=until)
    if b.probes < cfg.half_open_requests:
        return Admission(True, probe=True, state="half-open")
    return Admission(False, state="half-open")


def probe_claimed(b: Breaker) -> None:
    b.probes += 1


def probe_released(b: Breaker) -> None:
    """A probe ended without a verdict (cancelled, rate limited): its slot is free again."""
    b.probes = max(0, b.probes - 1)


def _open(b: Breaker, now: float, forced: bool = False, reason: str | None = None) -> list[str]:
    b.state = "open"
    b.opened_at = now
    b.half_open_at = None
    b.probes = 0
    b.forced = forced
    b.reason = reason
    return ["breaker.opened"]


def record_failure(b: Breaker, cfg: BreakerConfig, now: float, probe: bool) -> list[str]:
    """A failed attempt of this type (not a rate limit)."""
    stale = b.last_failure is not None and now - b.last_failure > cfg.cooldown_seconds
    if b.state == "closed" and stale:
        b.failures = 0  # an old failure no longer counts toward the threshold
    b.failures += 1
    b.last_failure = now
    if b.state == "half-open" and probe:
        return _open(b, now)
    if b.state == "closed" and b.failures >= cfg.failure_threshold:
        return _open(b, now)
    return []


def record_success(b: Breaker, probe: bool) -> list[str]:
    if b.state == "half-open" and probe:
        b.state = "closed"
        b.failures = 0
        b.opened_at = b.half_open_at = None
        b.probes = 0
        return ["breaker.closed"]
    if b.state == "closed":
        b.failures = 0
    return []


def reset(b: Breaker) -> list[str]:
    b.state = "closed"
    b.failures = 0
    b.last_failure = b.opened_at = b.half_open_at = None
    b.forced = False
    b.reason = None
    b.probes = 0
    return ["breaker.reset"]


def trip(b: Breaker, now: float, reason: str) -> list[str]:
    return _open(b, now, forced=True, reason=reason)
