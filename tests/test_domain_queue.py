"""The queue's pure rules: keys, priorities, backoff, rate limits, failure outcomes."""

import random

import pytest

from lokid.domain.queue import (
    MAX_BACKOFF,
    backoff_delay,
    canonical_json,
    cascade_reason,
    cascades_to,
    check_cancellable,
    check_dead,
    check_decision_report,
    check_held,
    claim_key,
    decide_failure,
    idempotency_key,
    is_rate_limited,
    key_change,
    normalize_priority,
    parse_retry_after,
)
from lokid.errors import Conflict, InvalidParams


class Fixed(random.Random):
    """A random source that always returns the same fraction of the range."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


def test_idempotency_key_is_sha256_of_sorted_compact_json():
    import hashlib

    payload = {"target": "src/a.py", "action": "implement", "params": {"b": 1, "a": "é"}}
    assert canonical_json(payload) == (
        b'{"action":"implement","params":{"a":"\xc3\xa9","b":1},"target":"src/a.py"}'
    )
    assert idempotency_key(payload) == hashlib.sha256(canonical_json(payload)).hexdigest()
    assert idempotency_key({"b": 1, "a": 2}) == idempotency_key({"a": 2, "b": 1})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (7, 7), (0, 1), (11, 10), ("critical", 10), ("high", 8), ("medium", 5),
        ("normal", 5), ("LOW", 3), ("9", 9), ("whatever", 5), (None, 5),
    ],
)  # fmt: skip
def test_priorities_from_numbers_and_loki_mode_names(given, expected):
    assert normalize_priority(given) == expected


def test_a_boolean_is_not_a_priority():
    with pytest.raises(ValueError):
        normalize_priority(True)


def test_backoff_doubles_from_the_base_without_compounding():
    no_jitter = Fixed(0.0)
    assert [backoff_delay(60, n, no_jitter) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert backoff_delay(60, 20, no_jitter) == MAX_BACKOFF


def test_jitter_adds_at_most_ten_percent_of_the_capped_wait():
    assert backoff_delay(60, 2, Fixed(1.0)) == pytest.approx(132.0)
    assert backoff_delay(60, 30, Fixed(1.0)) == pytest.approx(3960.0)
    rng = random.Random(7)
    for attempt in range(1, 12):
        capped = min(60 * 2 ** (attempt - 1), 3600)
        for _ in range(200):
            assert capped <= backoff_delay(60, attempt, rng) <= capped * 1.1


@pytest.mark.parametrize(
    "error",
    ["Rate limit exceeded", "HTTP 429", "Too Many Requests", "quota exceeded", "Retry-After: 5"],
)
def test_rate_limit_indicators(error):
    assert is_rate_limited(error)


def test_ordinary_errors_are_not_rate_limits():
    assert not is_rate_limited("tests failed: 3 assertions")


@pytest.mark.parametrize(
    ("error", "seconds"),
    [
        ("429 Too Many Requests; Retry-After: 30", 30.0),
        ("retry after 1.5s", 1.5),
        ("retry_after=500ms", 0.5),
        ("rate limit", None),
    ],
)
def test_retry_after_is_parsed_from_the_error(error, seconds):
    assert parse_retry_after(error) == seconds


def failure(**overrides):
    args = dict(
        retries=0, max_retries=3, backoff_seconds=60, error="boom",
        retry_after=None, rate_limits=0, rng=Fixed(0.0),
    )  # fmt: skip
    return decide_failure(**{**args, **overrides})


def test_failures_retry_with_backoff_then_dead_letter():
    first = failure()
    assert (first.kind, first.retries, first.delay) == ("retry", 1, 60)
    second = failure(retries=1)
    assert (second.kind, second.retries, second.delay) == ("retry", 2, 120)
    third = failure(retries=2)
    assert (third.kind, third.retries) == ("dead-letter", 3)


def test_a_rate_limit_does_not_count_as_a_retry():
    outcome = failure(retries=2, error="429 Too Many Requests, Retry-After: 42")
    assert (outcome.kind, outcome.retries, outcome.delay) == ("rate-limited", 2, 42)
    assert outcome.rate_limits == 1


def test_an_explicit_retry_after_wins_and_marks_a_rate_limit():
    outcome = failure(error="upstream said no", retry_after=7)
    assert (outcome.kind, outcome.delay) == ("rate-limited", 7)


def test_rate_limits_without_a_wait_back_off_by_their_own_count():
    assert failure(error="rate limit", rate_limits=0).delay == 60
    assert failure(error="rate limit", rate_limits=2).delay == 240
    assert failure(error="rate limit", rate_limits=10).delay == MAX_BACKOFF


def test_claim_order_is_priority_then_age():
    assert claim_key(9, 5) < claim_key(8, 1)
    assert claim_key(8, 1) < claim_key(8, 2)
    assert not claim_key(8, 3) < claim_key(8, 2)


STATES = ("pending", "in-progress", "completed", "dead-letter", "cancelled")


@pytest.mark.parametrize("before", STATES)
@pytest.mark.parametrize("after", STATES)
def test_a_key_is_held_exactly_while_the_task_is_live(before, after):
    live = {"pending", "in-progress", "completed"}
    expected = None
    if before in live and after not in live:
        expected = "release"
    elif after in live and before not in live:
        expected = "hold"
    assert key_change(before, after) == expected


def test_only_the_holder_of_an_in_progress_task_may_act_on_it():
    check_held("t", "in-progress", "a1", "a1")
    with pytest.raises(Conflict, match="held by 'a1', not 'a2'"):
        check_held("t", "in-progress", "a1", "a2")
    for state in ("pending", "completed", "dead-letter", "cancelled"):
        with pytest.raises(Conflict, match=f"is {state}, not in progress"):
            check_held("t", state, "a1", "a1")


def test_only_live_work_is_cancelled_and_the_cascade_follows_it():
    for state in ("pending", "in-progress"):
        check_cancellable("t", state)
        assert cascades_to(state)
    for state in ("completed", "dead-letter", "cancelled"):
        with pytest.raises(Conflict):
            check_cancellable("t", state)
        assert not cascades_to(state)
    assert cascade_reason("t1") == "Parent t1 cancelled"


def test_dead_letter_decisions_need_a_dead_letter():
    check_dead("t", "dead-letter")
    for state in ("pending", "in-progress", "completed", "cancelled"):
        with pytest.raises(Conflict, match="not in the dead-letter queue"):
            check_dead("t", state)


@pytest.mark.parametrize("report", [None, "", "   ", {}, []])
def test_a_completion_must_say_why(report):
    result = {} if report is None else {"decisionReport": report}
    with pytest.raises(InvalidParams, match="decisionReport is required"):
        check_decision_report(result)


@pytest.mark.parametrize("report", ["tests pass", {"why": "ok"}, ["step 1"], 0, False])
def test_any_non_empty_report_will_do(report):
    check_decision_report({"decisionReport": report})
