"""One project's Queue on each real store (a SQLite file, a PostgreSQL database), with an
injected clock and random source."""

import itertools
import random
import subprocess
import sys
from collections.abc import Callable, Iterator

import msgspec
import pytest
from pgenv import STORES

from lokid.errors import Conflict, InvalidParams, NotFound
from lokid.queue.breaker_config import BreakerConfigs, BreakerSettings, BreakersFile
from lokid.queue.core import Claim, Queue
from lokid.queue.shared import decode_notice, is_shared
from lokid.store.base import QueueStore, TaskRow
from lokid.store.sqlite import SqliteStore

T0 = 1_800_000_000.0
REPORT = {"decisionReport": {"why": "tests pass"}}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


OpenStore = Callable[[], QueueStore]
_names = itertools.count()


@pytest.fixture(scope="module")
def pg_database(request) -> Iterator:
    """One pool for the module's PostgreSQL runs (each test is its own project in it)."""
    from lokid.store.pg_database import open_database

    db = open_database(request.getfixturevalue("pg_url"))
    yield db
    db.close()


@pytest.fixture(params=STORES)
def open_store(request, tmp_path) -> OpenStore:
    """Opens the test's store (again, for a restart): SQLite, or a project in PostgreSQL."""
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "lokid.db")
    from lokid.store.postgres import PostgresStore

    db = request.getfixturevalue("pg_database")
    name = f"{request.node.name}-{next(_names)}"
    return lambda: PostgresStore(db, name)


class Tap:
    """A shared store's events as every lokid instance receives them: LISTEN on the
    project's channel; `drain` sends a marker and reads up to it (notifications arrive in
    commit order, so every earlier commit's events are in by then)."""

    def __init__(self, store) -> None:
        import psycopg

        self.conn = psycopg.connect(store.db.url, autocommit=True)
        self.channel = store.channel
        self.conn.execute(f'LISTEN "{self.channel}"')
        self.marks = itertools.count()

    def drain(self) -> list:
        marker = f"sync {next(self.marks)}"
        self.conn.execute("SELECT pg_notify(%s, %s)", (self.channel, marker))
        events = []
        for note in self.conn.notifies(timeout=10):
            if note.payload == marker:
                return events
            events += decode_notice(note.payload)[0]
        raise AssertionError("the marker did not come back")


class Harness:
    def __init__(self, open_store: OpenStore, config: BreakerConfigs | None = None) -> None:
        self.open_store = open_store
        self.clock = Clock()
        self._events: list[tuple[str, dict]] = []
        self.changed: set[str] = set()
        self.config = config or BreakerConfigs()
        self.queue = self._open()
        self.tap = Tap(self.queue.store) if is_shared(self.queue.store) else None

    @property
    def events(self) -> list[tuple[str, dict]]:
        """What subscribers have heard so far (from a shared store: through LISTEN)."""
        if self.tap is not None:
            self._events += [(e.TOPIC, msgspec.to_builtins(e)) for e in self.tap.drain()]
        return self._events

    def _open(self) -> Queue:
        store = self.open_store()
        return Queue(
            "/p",
            store,
            self.config,
            lambda event: self._events.append((event.TOPIC, msgspec.to_builtins(event))),
            self.changed.update,
            clock=self.clock,
            rng=random.Random(1),
        )

    def reopen(self) -> Queue:
        self.queue.store.close()
        self.queue = self._open()
        return self.queue

    def topics(self) -> list[str]:
        return [t for t, _ in self.events]

    def add(self, **task) -> str:
        task.setdefault("payload", {"n": len(self._events) + random.random()})
        return self.queue.enqueue(task).id

    def claim(self, agent="a1", caps=("eng",), lease=None):
        return self.queue.claim(agent, list(caps), lease)

    def fail_attempts(self, task_type: str, n: int, **task) -> None:
        """`n` failed attempts of `task_type` (enough to open its breaker in these tests)."""
        for _ in range(n):
            task_id = self.add(type=task_type, maxRetries=9, **task)
            self.claim(caps=[task_type])
            self.queue.fail(task_id, "a1", "crash")


@pytest.fixture
def h(open_store) -> Harness:
    return Harness(open_store)


def test_claims_go_highest_priority_first_then_oldest(h):
    low = h.add(type="eng", priority=2)
    first_high = h.add(type="eng", priority=9)
    second_high = h.add(type="eng", priority=9)
    order = [h.claim().task.id for _ in range(3)]
    assert order == [first_high, second_high, low]
    assert h.claim().task is None


def test_claims_only_types_the_agent_can_do(h):
    h.add(type="ops", priority=10)
    eng = h.add(type="eng", priority=1)
    assert h.claim(caps=["eng"]).task.id == eng
    assert h.claim(caps=["eng"]).task is None
    assert h.claim(caps=["ops", "eng"]).task.type == "ops"


def test_a_task_waits_for_its_dependencies(h):
    parent = h.add(type="eng", priority=1)
    child = h.add(type="eng", priority=10, dependencies=[parent])
    claimed = h.claim().task
    assert claimed.id == parent, "the child must wait although it has higher priority"
    assert h.claim().task is None
    assert h.queue.stats().blocked_by_dependencies == 1
    h.queue.complete(parent, "a1", REPORT)
    assert h.claim().task.id == child


def test_dependencies_must_name_existing_tasks(h):
    with pytest.raises(InvalidParams, match="unknown tasks: ghost"):
        h.add(type="eng", dependencies=["ghost"])


def test_a_duplicate_returns_the_existing_id(h):
    first = h.queue.enqueue({"type": "eng", "payload": {"action": "x"}})
    again = h.queue.enqueue({"type": "eng", "payload": {"action": "x"}, "priority": 9})
    assert (again.id, again.duplicate, first.duplicate) == (first.id, True, False)
    assert h.queue.stats().states["pending"] == 1


def test_a_dead_lettered_duplicate_is_allowed_again(h):
    first = h.queue.enqueue({"type": "eng", "payload": {"a": 1}, "maxRetries": 1}).id
    h.claim()
    h.queue.fail(first, "a1", "broken")
    assert h.queue.get(first).state == "dead-letter"
    again = h.queue.enqueue({"type": "eng", "payload": {"a": 1}})
    assert not again.duplicate and again.id != first


def test_a_completed_duplicate_is_still_a_duplicate(h):
    first = h.queue.enqueue({"type": "eng", "payload": {"a": 1}}).id
    h.claim()
    h.queue.complete(first, "a1", REPORT)
    assert h.queue.enqueue({"type": "eng", "payload": {"a": 1}}).duplicate


def test_failures_back_off_then_dead_letter_with_an_event(h):
    task_id = h.add(type="eng")
    expected_waits = [60, 120]
    for wait in expected_waits:
        h.claim()
        state = h.queue.fail(task_id, "a1", "tests failed")
        assert state.state == "pending"
        delay = _seconds(state.task.available_at) - h.clock.now
        assert wait <= delay <= wait * 1.1 + 0.001
        assert h.claim().task is None, "not before availableAt"
        h.clock.advance(wait * 1.1 + 1)
    h.claim()
    final = h.queue.fail(task_id, "a1", "tests failed")
    assert final.state == "dead-letter"
    assert final.task.retries == 3 and final.task.last_error == "tests failed"
    assert h.topics().count("queue.retrying") == 2
    assert "queue.dead-lettered" in h.topics()


def _seconds(iso_text: str) -> float:
    from lokid.wire.times import parse_iso

    return parse_iso(iso_text)


def test_backoff_seconds_itself_never_changes(h):
    task_id = h.add(type="eng", backoffSeconds=10, maxRetries=5)
    for _ in range(3):
        h.claim()
        h.queue.fail(task_id, "a1", "x")
        h.clock.advance(1000)
    assert h.queue.get(task_id).task.backoff_seconds == 10


def test_an_expired_lease_is_a_failed_attempt(h):
    task_id = h.add(type="eng", timeout=30)
    h.claim()
    h.clock.advance(29)
    assert h.queue.expire_leases() == 0
    h.clock.advance(2)
    assert h.queue.expire_leases() == 1
    state = h.queue.get(task_id)
    assert (state.state, state.task.retries, state.task.last_error) == (
        "pending",
        1,
        "lease expired",
    )
    assert "queue.lease-expired" in h.topics()


def test_a_task_that_always_hangs_ends_in_the_dead_letter_queue(h):
    task_id = h.add(type="eng", timeout=10)
    for _ in range(3):
        h.clock.advance(4000)
        assert h.claim().task.id == task_id
        h.clock.advance(11)
        h.queue.expire_leases()
    assert h.queue.get(task_id).state == "dead-letter"


def test_heartbeat_extends_the_lease(h):
    task_id = h.add(type="eng", timeout=30)
    claimed = h.claim(lease=20).task
    assert _seconds(claimed.lease_until) == pytest.approx(h.clock.now + 20, abs=0.001)
    h.clock.advance(15)
    until = h.queue.heartbeat(task_id, "a1", 20)
    assert until == h.clock.now + 20
    shown = h.queue.get(task_id).task
    assert _seconds(shown.lease_until) == pytest.approx(until, abs=0.001), "clients see it"
    h.clock.advance(15)
    assert h.queue.expire_leases() == 0
    with pytest.raises(Conflict):
        h.queue.heartbeat(task_id, "intruder", None)
    h.queue.complete(task_id, "a1", REPORT)
    assert h.queue.get(task_id).task.lease_until is None, "no lease once it is done"


def test_a_rate_limit_reschedules_without_a_retry_and_asks_others_to_slow_down(h):
    task_id = h.add(type="eng")
    h.claim()
    state = h.queue.fail(task_id, "a1", "429 Too Many Requests; Retry-After: 30")
    assert state.state == "pending" and state.task.retries == 0
    assert _seconds(state.task.available_at) == pytest.approx(h.clock.now + 30, abs=0.002)
    assert ("queue.slowdown", {"type": "eng", "wait": 15.0}) in h.events


def test_retry_after_param_counts_as_a_rate_limit(h):
    task_id = h.add(type="eng")
    h.claim()
    state = h.queue.fail(task_id, "a1", "upstream busy", 8)
    assert state.task.retries == 0
    assert ("queue.slowdown", {"type": "eng", "wait": 4.0}) in h.events


def test_cancel_cascades_down_a_three_level_chain(h):
    root = h.add(type="eng")
    middle = h.add(type="eng", dependencies=[root])
    leaf = h.add(type="eng", dependencies=[middle])
    unrelated = h.add(type="eng")
    assert h.queue.cancel(root, "user changed plans") == [root, middle, leaf]
    assert h.queue.get(leaf).task.cancel_reason == f"Parent {middle} cancelled"
    assert h.queue.get(middle).task.cancel_reason == f"Parent {root} cancelled"
    assert h.queue.get(unrelated).state == "pending"
    with pytest.raises(Conflict):
        h.queue.cancel(root, "again")


def test_complete_needs_a_decision_report_and_keeps_the_claim_otherwise(h):
    task_id = h.add(type="eng")
    h.claim()
    with pytest.raises(InvalidParams, match="decisionReport"):
        h.queue.complete(task_id, "a1", {"status": "success", "output": "done"})
    assert h.queue.get(task_id).state == "in-progress"
    done = h.queue.complete(task_id, "a1", {"decisionReport": {"x": 1}, "output": "ok"})
    assert done.state == "completed" and done.task.completed_at is not None


def test_only_the_holder_may_complete_or_fail(h):
    task_id = h.add(type="eng")
    h.claim(agent="owner")
    with pytest.raises(Conflict, match="held by 'owner'"):
        h.queue.complete(task_id, "thief", REPORT)
    with pytest.raises(Conflict):
        h.queue.fail(task_id, "thief", "x")


def test_complete_with_claim_next_claims_in_the_same_transaction(h):
    first, second = h.add(type="eng", priority=9), h.add(type="eng", priority=1)
    h.claim()
    h.events.clear()
    done = h.queue.complete(first, "a1", REPORT, Claim("a1", ["eng"], 30.0))
    assert done.state == "completed"
    assert done.next.task.id == second and done.next.task.claimed_by == "a1"
    assert h.topics() == ["queue.completed", "queue.claimed"]
    assert h.queue.heartbeat(second, "a1", None) > 0  # held: the lease is in force
    last = h.queue.complete(second, "a1", REPORT, Claim("a1", ["eng"]))
    assert last.next.task is None and last.next.blocked is None


def test_fail_with_claim_next_never_hands_back_the_failed_task_at_once(h):
    task_id = h.add(type="eng")
    h.claim()
    failed = h.queue.fail(task_id, "a1", "crash", then=Claim("a1", ["eng"]))
    assert failed.state == "pending" and failed.next.task is None  # in backoff
    h.clock.advance(3600)
    assert h.claim().task.id == task_id


def test_a_refused_completion_claims_nothing(h):
    task_id = h.add(type="eng")
    other = h.add(type="eng")
    h.claim(agent="owner")
    with pytest.raises(Conflict):
        h.queue.complete(task_id, "thief", REPORT, Claim("thief", ["eng"]))
    with pytest.raises(InvalidParams):
        h.queue.complete(task_id, "owner", {"output": 1}, Claim("owner", ["eng"]))
    assert h.queue.get(other).state == "pending"
    assert h.queue.get(task_id).state == "in-progress"


def test_completing_a_task_cancelled_meanwhile_is_a_conflict(h):
    task_id = h.add(type="eng")
    h.claim()
    h.queue.cancel(task_id, "stop")
    with pytest.raises(Conflict, match="cancelled"):
        h.queue.complete(task_id, "a1", REPORT)


@pytest.mark.parametrize("bad", [b"\x00", float("inf"), float("nan"), [1, {"x": b""}]])
def test_a_payload_json_cannot_hold_is_refused(h, bad):
    """msgpack can carry binary and non-finite floats; a task is a JSON document."""
    with pytest.raises(InvalidParams, match=r"task: payload is not JSON"):
        h.queue.enqueue({"type": "eng", "payload": {"a": bad}})
    with pytest.raises(InvalidParams, match=r"tasks\[1\]: payload is not JSON"):
        h.queue.enqueue_many(
            [{"payload": {"ok": 1}}, {"idempotencyKey": "k", "payload": {"b": bad}}]
        )
    assert h.queue.stats().states["pending"] == 0


def test_enqueue_many_is_all_or_nothing(h):
    good = {"type": "eng", "payload": {"a": 1}}
    with pytest.raises(InvalidParams, match=r"tasks\[1\]"):
        h.queue.enqueue_many([good, {"type": "", "payload": {"b": 2}}])
    assert h.queue.stats().states["pending"] == 0
    batch = h.queue.enqueue_many(
        [{"id": "a", "type": "eng", "payload": {"a": 1}}, {"type": "eng", "dependencies": ["a"]}]
    )
    assert [r.duplicate for r in batch] == [False, False]


def test_unknown_task_is_not_found(h):
    with pytest.raises(NotFound):
        h.queue.get("nope")


def test_list_pages_with_a_cursor(h):
    ids = [h.add(type="eng") for _ in range(5)]
    tasks, cursor = h.queue.page("pending", None, 2, None)
    seen = [t.id for t in tasks]
    while cursor:
        tasks, cursor = h.queue.page("pending", None, 2, cursor)
        seen += [t.id for t in tasks]
    assert seen == ids
    with pytest.raises(InvalidParams):
        h.queue.page(None, None, 2, "garbage")


def test_stats_count_states_and_types_and_age(h):
    h.add(type="eng")
    h.clock.advance(5)
    h.add(type="ops")
    h.claim(caps=["ops"])
    stats = h.queue.stats()
    assert stats.states["pending"] == 1 and stats.states["in-progress"] == 1
    assert stats.types == {"eng": {"pending": 1}, "ops": {"in-progress": 1}}
    assert stats.oldest_pending_age_seconds == pytest.approx(5, abs=0.01)


def test_dlq_retry_resets_retries_and_delete_removes(h):
    a = h.add(type="eng", maxRetries=1)
    b = h.add(type="eng", maxRetries=1)
    for task_id in (a, b):
        h.claim()
        h.queue.fail(task_id, "a1", "x")
    assert {t.id for t in h.queue.dlq_list()} == {a, b}
    h.queue.dlq_retry(a)
    assert (h.queue.get(a).state, h.queue.get(a).task.retries) == ("pending", 0)
    h.queue.dlq_delete(b)
    with pytest.raises(NotFound):
        h.queue.get(b)
    with pytest.raises(Conflict):
        h.queue.dlq_retry(a)


def test_extra_fields_from_loki_mode_files_are_kept(h):
    h.queue.import_tasks([{"id": "prd-001", "title": "User login", "priority": "high"}])
    task = h.queue.get("prd-001").task
    assert task["title"] == "User login" and task["priority"] == 8 and task["type"] == "general"


def test_import_is_idempotent_by_id_and_reports_bad_entries(h):
    entries = [{"id": "t1", "type": "eng"}, "not a task", {"id": "t2", "priority": True}]
    imported, skipped, problems = h.queue.import_tasks(entries)
    assert (imported, skipped) == (1, 0) and len(problems) == 2
    assert h.queue.import_tasks([{"id": "t1", "type": "eng"}])[:2] == (0, 1)


def test_events_are_published_only_after_commit(h):
    with pytest.raises(InvalidParams):
        h.queue.enqueue_many([{"type": "eng", "payload": {"a": 1}}, {"dependencies": ["zz"]}])
    assert h.events == []


# -- breakers in the queue ------------------------------------------------------------


def config(**overrides) -> BreakerConfigs:
    defaults = BreakerSettings(failure_threshold=2, cooldown_seconds=300, half_open_after=60)
    return BreakerConfigs(BreakersFile(defaults, {k: v for k, v in overrides.items()}))


def test_an_open_breaker_skips_its_type(open_store):
    h = Harness(open_store, config())
    h.fail_attempts("flaky", 2, backoffSeconds=1)
    assert "breaker.opened" in h.topics()
    h.clock.advance(30)  # past the backoff, not yet half-open
    h.add(type="flaky", priority=10)
    other = h.add(type="eng", priority=1)
    result = h.claim(caps=["flaky", "eng"])
    assert result.task.id == other, "the higher-priority flaky tasks are skipped"


def test_claim_reports_the_blocking_breaker(open_store):
    h = Harness(open_store, config())
    ids = [h.add(type="flaky", maxRetries=9) for _ in range(3)]
    for task_id in ids[:2]:
        h.claim(caps=["flaky"])
        h.queue.fail(task_id, "a1", "crash")
    result = h.claim(caps=["flaky"])
    assert result.task is None
    assert result.blocked["flaky"].state == "open"
    assert _seconds(result.blocked["flaky"].until) == pytest.approx(h.clock.now + 60, abs=0.01)


def test_half_open_gives_exactly_the_configured_probes_to_concurrent_claimers(open_store):
    cfg = config(flaky=BreakerSettings(half_open_requests=3))
    h = Harness(open_store, cfg)
    h.fail_attempts("flaky", 2, backoffSeconds=1)
    for _ in range(6):
        h.add(type="flaky")
    h.clock.advance(61)
    claims = [h.claim(agent=f"agent{i}", caps=["flaky"]) for i in range(5)]
    assert sum(c.task is not None for c in claims) == 3
    assert all(c.blocked["flaky"].state == "half-open" for c in claims if c.task is None)
    probe = next(c.task for c in claims if c.task is not None)
    h.queue.complete(probe.id, probe.claimed_by, REPORT)
    assert "breaker.closed" in h.topics()
    assert h.claim(caps=["flaky"]).task is not None


def test_a_failed_probe_reopens_and_an_expired_probe_counts_as_failed(open_store):
    h = Harness(open_store, config())
    h.fail_attempts("flaky", 2, backoffSeconds=1)
    h.clock.advance(61)
    probe = h.claim(caps=["flaky"], lease=5).task
    h.clock.advance(6)
    h.queue.expire_leases()
    assert h.topics()[-3:].count("breaker.opened") == 1
    assert h.claim(caps=["flaky"]).blocked["flaky"].state == "open"
    assert probe is not None


def test_rate_limits_never_count_as_breaker_failures(open_store):
    h = Harness(open_store, config())
    for _ in range(5):
        task_id = h.add(type="api")
        h.claim(caps=["api"])
        h.queue.fail(task_id, "a1", "rate limit exceeded")
    assert "breaker.opened" not in h.topics()
    listing = h.queue.breakers.listing(h.clock.now)
    assert "api" not in listing or listing["api"].failures == 0


def test_a_forced_breaker_stays_open_until_reset(open_store):
    h = Harness(open_store, config())
    h.add(type="eng")
    with h.queue.transaction():
        h.queue.breakers.trip("eng", h.clock.now, "deploy freeze")
    h.clock.advance(10_000)
    assert h.claim().blocked["eng"].until is None
    with h.queue.transaction():
        h.queue.breakers.reset("eng")
    assert h.claim().task is not None


def test_breaker_state_and_open_until_survive_a_restart(open_store):
    h = Harness(open_store, config())
    h.fail_attempts("flaky", 2)
    before = h.claim(caps=["flaky"]).blocked["flaky"]
    queue = h.reopen()
    after = queue.claim("a2", ["flaky"], None).blocked["flaky"]
    assert (after.state, after.until) == (before.state, before.until)


def test_per_type_overrides(open_store):
    h = Harness(open_store, config(fragile=BreakerSettings(failure_threshold=1)))
    task_id = h.add(type="fragile", maxRetries=9)
    h.claim(caps=["fragile"])
    h.queue.fail(task_id, "a1", "crash")
    sturdy = h.add(type="sturdy", maxRetries=9)
    h.claim(caps=["sturdy"])
    h.queue.fail(sturdy, "a1", "crash")
    states = {t: b.state for t, b in h.queue.breakers.listing(h.clock.now).items()}
    assert states == {"fragile": "open", "sturdy": "closed"}


def test_a_rolled_back_transaction_leaves_breakers_as_they_were(open_store):
    """A commit that fails (a full disk, say) must not leave memory ahead of the database."""
    h = Harness(open_store, config())
    h.fail_attempts("flaky", 1)
    before = h.queue.breakers.listing(h.clock.now)
    with pytest.raises(RuntimeError), h.queue.transaction():
        h.queue.breakers.record_failure("flaky", h.clock.now, probe=False)  # would open it
        h.queue.breakers.record_failure("other", h.clock.now, probe=False)
        raise RuntimeError("the commit fails")
    assert h.queue.breakers.listing(h.clock.now) == before
    assert "breaker.opened" not in h.topics()


def _row(task_id: str) -> TaskRow:
    doc = msgspec.json.encode({"id": task_id})
    return TaskRow(0, task_id, "pending", "eng", 5, 0.0, 0, None, None, 0, False, doc, None)


def test_the_database_is_lokids_alone_while_it_is_open(tmp_path):
    """A second process (say, a second lokid on the same project) is refused at once with
    a clear error, instead of racing the first. Odd characters in the path are fine."""
    path = tmp_path / "a b?c#d%e" / "lokid.db"
    store = SqliteStore(path)
    with store.transaction():
        store.insert(_row("t1"), [], "k", "2026-11-30T00:00:00.000Z")
    reader = store.view_reader()  # the views' reader, in this process, shares the lock
    assert b'"id":"t1"' in reader.read("pending", "pending")
    probe = (
        "import sys; from pathlib import Path; from lokid.errors import Unavailable\n"
        "from lokid.store.sqlite import SqliteStore\n"
        "try:\n    SqliteStore(Path(sys.argv[1]))\n"
        "except Unavailable as exc:\n    print(exc.message)\n"
    )
    run = [sys.executable, "-c", probe, str(path)]
    refused = subprocess.run(run, capture_output=True, text=True, timeout=30, check=True)
    assert (
        refused.stdout.strip()
        == f"{path} is open in another process (another lokid serving this project?)"
    )
    reader.close()
    store.close()
    opened = subprocess.run(run, capture_output=True, text=True, timeout=30, check=True)
    assert opened.stdout == ""
