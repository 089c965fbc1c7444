"""The breaker state machine on explicit times."""

from lokid.domain import breaker as rules
from lokid.domain.breaker import Breaker, BreakerConfig

CFG = BreakerConfig(failure_threshold=3, cooldown_seconds=300, half_open_after=60)


def fail(b: Breaker, now: float, probe: bool = False, cfg: BreakerConfig = CFG) -> list[str]:
    return rules.advance(b, cfg, now) + rules.record_failure(b, cfg, now, probe)


def opened() -> Breaker:
    """A breaker that three failures (at 0, 1, 2) opened."""
    b = Breaker()
    for t in range(3):
        fail(b, t)
    return b


def half_open(probe: bool) -> Breaker:
    """Opened, then half-open at 100; `probe`: with its first probe claimed."""
    b = opened()
    rules.advance(b, CFG, 100)
    if probe:
        rules.probe_claimed(b)
    return b


def test_threshold_failures_open_the_breaker():
    b = Breaker()
    assert fail(b, 0) == [] and fail(b, 1) == []
    assert fail(b, 2) == ["breaker.opened"]
    assert (b.state, b.failures, b.opened_at) == ("open", 3, 2)


def test_a_failure_after_the_cooldown_counts_from_one_again():
    b = Breaker()
    fail(b, 0)
    fail(b, 100)
    assert b.failures == 2
    fail(b, 100 + 301)  # more than cooldownSeconds after the previous failure
    assert (b.state, b.failures) == ("closed", 1)


def test_a_completion_resets_the_count():
    b = Breaker()
    fail(b, 0)
    fail(b, 1)
    assert rules.record_success(b, probe=False) == []
    assert b.failures == 0


def test_open_blocks_until_half_open_after():
    b = opened()
    assert rules.advance(b, CFG, 61.9) == []
    admission = rules.admit(b, CFG)
    assert (admission.allowed, admission.state, admission.until) == (False, "open", 62)
    assert rules.advance(b, CFG, 62) == ["breaker.half-open"]
    assert (b.state, b.half_open_at) == ("half-open", 62)


def test_half_open_hands_out_exactly_the_configured_probes():
    cfg = BreakerConfig(failure_threshold=1, half_open_after=10, half_open_requests=3)
    b = Breaker()
    fail(b, 0, cfg=cfg)
    rules.advance(b, cfg, 10)
    granted = 0
    for _ in range(5):
        admission = rules.admit(b, cfg)
        if admission.allowed:
            assert admission.probe
            rules.probe_claimed(b)
            granted += 1
    assert granted == 3


def test_a_probe_that_completes_closes_the_breaker():
    b = half_open(probe=True)
    assert rules.record_success(b, probe=True) == ["breaker.closed"]
    assert (b.state, b.failures, b.opened_at) == ("closed", 0, None)


def test_a_probe_that_fails_reopens_with_a_fresh_opened_at():
    b = half_open(probe=True)
    assert fail(b, 130, probe=True) == ["breaker.opened"]
    assert (b.state, b.opened_at) == ("open", 130)
    assert rules.admit(b, CFG).until == 190


def test_a_non_probe_failure_in_half_open_does_not_reopen():
    b = half_open(probe=False)
    assert fail(b, 101, probe=False) == []
    assert b.state == "half-open"


def test_a_released_probe_frees_its_slot():
    b = Breaker(state="half-open", probes=1)
    assert not rules.admit(b, CFG).allowed
    rules.probe_released(b)
    assert rules.admit(b, CFG).allowed


def test_forced_open_stays_open_until_reset():
    b = Breaker()
    assert rules.trip(b, 0, "maintenance") == ["breaker.opened"]
    assert rules.advance(b, CFG, 10_000) == []
    admission = rules.admit(b, CFG)
    assert (admission.allowed, admission.until) == (False, None)
    assert rules.reset(b) == ["breaker.reset"]
    assert (b.state, b.forced, b.failures) == ("closed", False, 0)
