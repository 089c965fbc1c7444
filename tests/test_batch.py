"""Group commit, pure: a batch of queue operations on a real SQLite file, no socket.

`run_batch` runs requests the way the daemon's batcher does (one GroupCommit, each
operation a savepoint); the handlers here call the Queue as lokid's methods do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from test_queue import REPORT, Harness

from lokid.errors import NotFound
from lokid.queue.breaker_config import BreakerConfigs, BreakerSettings, BreakersFile
from lokid.queue.unit import GroupCommit
from lokid.server.batch import Batcher, Ready, SpinPolicy, run_batch
from lokid.server.dispatch import Call, Method
from lokid.store.sqlite import SqliteStore


def op(fn: Callable[[], Any], name: str = "queue.op") -> Ready:
    """A request whose handler is `fn`."""
    method = Method(name, dict, lambda call, params: fn(), False, None, True)  # type: ignore[arg-type]
    return Ready(conn=None, method=method, call=Call(None, None, 0), params=None)  # type: ignore[arg-type]


def enqueue(h: Harness, task_id: str, task_type: str = "eng") -> Ready:
    task = {"id": task_id, "type": task_type, "payload": {"i": task_id}}
    return op(lambda: h.queue.enqueue(task))


def test_one_failing_operation_leaves_its_neighbours_committed(tmp_path: Path) -> None:
    h = Harness(lambda: SqliteStore(tmp_path / "lokid.db"))
    h.queue.enqueue({"id": "held", "type": "eng"})
    assert h.queue.claim("a", ["eng"], None).task.id == "held"
    h.events.clear()

    def complete_then_fail() -> Any:
        h.queue.complete("held", "a", REPORT)  # writes, then the operation fails
        raise NotFound("no such thing")

    items = [enqueue(h, "t1"), op(complete_then_fail), enqueue(h, "t2")]
    out = run_batch(items, GroupCommit())
    assert out[0] == (None, out[0][1]) and out[0][1].id == "t1"
    assert out[1][0] is not None and out[1][0].code == "not_found"
    assert out[2][0] is None and out[2][1].id == "t2"
    # the failed operation's write is undone, its neighbours' are not
    assert h.queue.get("held").state == "in-progress"
    assert h.queue.get("t1").state == h.queue.get("t2").state == "pending"
    # and so are its effects: no event, counts as the database says
    assert h.topics() == ["queue.enqueued", "queue.enqueued"]
    assert h.queue.stats().states["pending"] == 2
    assert h.queue.stats().states["in-progress"] == 1
    assert h.queue.stats().states["completed"] == 0
    h.reopen()  # what was committed is what memory said
    assert h.queue.stats().states["pending"] == 2


def test_a_batch_is_one_transaction_and_later_operations_see_earlier_ones(tmp_path: Path):
    h = Harness(lambda: SqliteStore(tmp_path / "lokid.db"))
    commits: list[str] = []
    h.queue.store._db.set_trace_callback(
        lambda sql: commits.append(sql) if sql in ("BEGIN IMMEDIATE", "COMMIT") else None
    )
    items = [enqueue(h, f"t{i}") for i in range(5)]
    items.append(op(lambda: h.queue.claim("a", ["eng"], None)))
    out = run_batch(items, GroupCommit())
    assert commits == ["BEGIN IMMEDIATE", "COMMIT"]
    assert out[-1][1].task is not None  # the claim saw the tasks enqueued before it


def test_events_wait_for_the_commit(tmp_path: Path) -> None:
    h = Harness(lambda: SqliteStore(tmp_path / "lokid.db"))
    seen: list[int] = []

    def look() -> None:
        seen.append(len(h.events))  # inside the batch, after an enqueue: nothing published

    run_batch([enqueue(h, "t1"), op(look)], GroupCommit())
    assert seen == [0] and h.topics() == ["queue.enqueued"]


def test_a_failed_commit_fails_every_operation_of_that_project_and_no_other(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Harness(lambda: SqliteStore(tmp_path / "a" / "lokid.db"))
    b = Harness(lambda: SqliteStore(tmp_path / "b" / "lokid.db"))
    # b's COMMIT will fail: a deferred foreign key is checked only then.
    db = b.queue.store._db
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(
        "CREATE TABLE parent(id INTEGER PRIMARY KEY);"
        "CREATE TABLE child(p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
    )

    def poison() -> None:
        with b.queue.transaction():
            db.execute("INSERT INTO child VALUES (7)")

    items = [enqueue(a, "a1"), enqueue(b, "b1"), op(poison), enqueue(a, "a2")]
    out = run_batch(items, GroupCommit())
    assert [error is None for error, _ in out] == [True, False, False, True]
    assert a.queue.get("a1").state == a.queue.get("a2").state == "pending"
    with pytest.raises(NotFound):
        b.queue.get("b1")
    assert b.topics() == [] and a.topics() == ["queue.enqueued", "queue.enqueued"]
    assert b.queue.stats().states["pending"] == 0


def test_breakers_changed_by_a_failed_operation_are_put_back(tmp_path: Path) -> None:
    config = BreakerConfigs(BreakersFile(BreakerSettings(failure_threshold=1)))
    h = Harness(lambda: SqliteStore(tmp_path / "lokid.db"), config)
    h.queue.enqueue({"id": "t", "type": "eng", "maxRetries": 5})
    h.queue.claim("a", ["eng"], None)

    def fail_then_raise() -> Any:
        h.queue.fail("t", "a", "boom")  # would open the breaker
        raise NotFound("changed my mind")

    run_batch([op(fail_then_raise), enqueue(h, "neighbour", "other")], GroupCommit())
    breaker = h.queue.breakers.snapshot().get("eng")
    assert breaker is None or breaker.state == "closed"
    assert h.queue.get("t").state == "in-progress"
    run_batch(
        [op(lambda: h.queue.fail("t", "a", "boom")), enqueue(h, "n2", "other")], GroupCommit()
    )
    assert h.queue.breakers.snapshot()["eng"].state == "open"  # (so the check above can fail)


def test_the_batcher_runs_inline_only_when_nobody_else_is_runnable() -> None:
    ran: list[int] = []
    replies: list[tuple[int, Any]] = []

    class Conn:
        def reply_now(self, msgid: int, error: Any, result: Any) -> None:
            replies.append((msgid, result))

    class NoGroup:
        failed: dict[int, BaseException] = {}

        def __enter__(self) -> None: ...
        def __exit__(self, *exc: Any) -> None: ...
        def begin_op(self, n: int) -> None:
            ran.append(n)

        def end_op(self, ok: bool) -> None: ...

    busy = [True]

    async def main() -> None:
        batcher = Batcher(NoGroup, others_runnable=lambda: busy[0])
        method = Method("m", dict, lambda call, params: params, False, None, True)  # type: ignore[arg-type]
        for i in range(3):
            batcher.add(Ready(Conn(), method, Call(None, None, i), i * 10))  # type: ignore[arg-type]
        conn = object()
        batcher.read_by(conn, 0)
        batcher.ready(conn, 10**9)  # others are runnable: left for the batcher's task
        assert replies == [] and batcher.pending == 3
        busy[0] = False
        batcher.read_by(object(), 10**9)
        batcher.ready(conn, 10**9)  # another client sent lately: left for the task too
        assert replies == [] and batcher.pending == 3
        batcher.read_by(conn, 10**9)
        batcher.ready(conn, 2 * 10**9)  # alone for a while, nobody runnable: run inline
        assert replies == [(0, 0), (1, 10), (2, 20)] and batcher.batches == 1

    trio.run(main)


def test_requests_of_a_busy_project_wait_and_run_once_it_is_free() -> None:
    from lokid.errors import QueueBusy

    busy = [True]
    replies: list[tuple[int, Any, Any]] = []

    class Conn:
        def reply_now(self, msgid: int, error: Any, result: Any) -> None:
            replies.append((msgid, error, result))

    def handler(call: Any, params: Any) -> Any:
        if busy[0] and params == "busy":
            raise QueueBusy("taking a bulk enqueue")
        return params

    async def main() -> None:
        batcher = Batcher(GroupCommit, others_runnable=lambda: False)
        method = Method("m", dict, handler, False, None, True)  # type: ignore[arg-type]
        batcher.add(Ready(Conn(), method, Call(None, None, 1), "busy"))  # type: ignore[arg-type]
        batcher.add(Ready(Conn(), method, Call(None, None, 2), "free"))  # type: ignore[arg-type]
        batcher.flush()
        assert replies == [(2, None, "free")]  # the busy project's request waits, unanswered
        busy[0] = False
        batcher.requeue()
        batcher.flush()
        assert replies[-1] == (1, None, "busy")

    trio.run(main)


def test_spin_policy_stops_polling_a_client_that_does_not_answer_fast() -> None:
    policy = SpinPolicy()
    spins = 0
    for _ in range(1000):  # a client that never has its next request ready in time
        if policy.should_spin():
            spins += 1
            policy.record(False)
    assert spins < 1000 / SpinPolicy.PROBE_EVERY + SpinPolicy.MAX_CREDIT
    policy.record(True)  # it speeds up: polling pays again
    assert all(policy.should_spin() for _ in range(10)) or policy.credit > 0


def test_sqlite_savepoint_keeps_the_outer_transaction(tmp_path: Path) -> None:
    from lokid.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "s.db")
    db = store._db
    with store.transaction():
        db.execute("CREATE TABLE x(v)")
        db.execute("INSERT INTO x VALUES (1)")
        with pytest.raises(ValueError), store.savepoint():
            db.execute("INSERT INTO x VALUES (2)")
            raise ValueError
        with store.savepoint():
            db.execute("INSERT INTO x VALUES (3)")
    assert [r[0] for r in db.execute("SELECT v FROM x ORDER BY v")] == [1, 3]
    assert isinstance(db, sqlite3.Connection)
