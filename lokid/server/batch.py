"""Group commit across connections: what is ready when lokid wakes runs together.

A connection hands each request of a batchable method (`Method.batch`: the queue's write
operations) to the daemon's `Batcher` instead of running it at once. The batch runs when no
other task is runnable, so every connection woken by the same readiness has added what it
read: inline, by the last reader (a lone agent pays no task switch, so its latency stays
as it was), or by the batcher's own task when others are still to run. Inside the batch
each operation is a savepoint of one transaction per project (`GroupCommit`); replies are
encoded and sent only after the commit that holds their operation, so a reply still means
"on disk", and an operation that fails fails alone.

`SpinPolicy` decides, per connection, whether to busy-poll for the next request after a
reply: only while that has been paying off, so an agent that thinks between requests (or
sends nothing) costs no CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from lokid.errors import QueueBusy
from lokid.server.dispatch import Call, Method, error_of
from lokid.wire.messages import Error

log = logging.getLogger("lokid.batch")

# A batch never holds more operations than this: the replies of a huge batch would all
# wait for its one commit (at ~30 us an operation, 256 are under 10 ms).
MAX_BATCH = 256
# How many times the batcher's task lets other runnable tasks go first, so that readers
# woken by the same readiness add their requests to this batch rather than the next.
GATHER_YIELDS = 2
# A connection busy-polls only once it has been the only one sending for this long: with
# several agents the next request is someone else's, and the poll would delay it.
SOLO_NS = 2_000_000


class Group(Protocol):
    """One group commit (lokid.queue.unit.GroupCommit)."""

    failed: dict[int, BaseException]

    def __enter__(self) -> Any: ...
    def __exit__(self, *exc_info: Any) -> None: ...
    def begin_op(self, op: int) -> None: ...
    def end_op(self, ok: bool) -> None: ...


class Replier(Protocol):
    def reply_now(self, msgid: int, error: Error | None, result: Any) -> None:
        """Queue the reply without waiting (the connection applies backpressure itself)."""
        ...


@dataclass(slots=True)
class Ready:
    """One request waiting for its batch."""

    conn: Replier
    method: Method
    call: Call[Any]
    params: Any


Outcome = tuple[Error | None, Any]
# The outcome of a request whose project is held by a bulk enqueue: it runs again later.
DEFERRED: Outcome = (None, object())


def run_batch(items: list[Ready], group: Group) -> list[Outcome]:
    """Run `items` in order inside one group commit; each its reply's (error, result).

    An operation that raises is answered with its error and undone alone (its savepoint);
    one whose project's commit failed is answered with that failure; one whose project a
    bulk enqueue holds (QueueBusy, raised before it touched anything) is DEFERRED.
    """
    if len(items) == 1:  # a batch of one is just the request: no savepoint to pay for
        return [_run_one(items[0])]
    out: list[Outcome] = []
    with group:
        for op, item in enumerate(items):
            group.begin_op(op)
            try:
                outcome: Outcome = (None, item.method.handler(item.call, item.params))
            except QueueBusy:
                outcome = DEFERRED
            except Exception as exc:
                outcome = (error_of(exc, item.method.name), None)
            try:
                group.end_op(outcome[0] is None)
            except Exception as exc:  # SQLite could not release or roll back the savepoint
                outcome = (error_of(exc, item.method.name), None)
            out.append(outcome)
    for op, exc in group.failed.items():
        out[op] = (error_of(exc, items[op].method.name), None)
    return out


def _run_one(item: Ready) -> Outcome:
    try:
        return (None, item.method.handler(item.call, item.params))
    except QueueBusy:
        return DEFERRED
    except Exception as exc:
        return (error_of(exc, item.method.name), None)


def _others_runnable() -> bool:
    return trio.lowlevel.current_statistics().tasks_runnable > 0


class Batcher:
    def __init__(
        self,
        group: Callable[[], Group],
        others_runnable: Callable[[], bool] = _others_runnable,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._group = group
        self._others_runnable = others_runnable
        self._max = max_batch
        self._ready: list[Ready] = []
        self._waiting: list[Ready] = []  # deferred behind a bulk enqueue
        self._lot = trio.lowlevel.ParkingLot()
        self._woken = False
        self._last_reader: object = None
        self._alone_since = 0
        self.batches = 0
        self.operations = 0

    def read_by(self, conn: object, now_ns: int) -> None:
        """`conn` read requests at `now_ns` (perf_counter_ns)."""
        if conn is not self._last_reader:
            self._last_reader = conn
            self._alone_since = now_ns

    def alone(self, conn: object, now_ns: int) -> bool:
        """True while `conn` has been the only connection sending for SOLO_NS."""
        return conn is self._last_reader and now_ns - self._alone_since >= SOLO_NS

    @property
    def pending(self) -> int:
        return len(self._ready)

    def add(self, item: Ready) -> None:
        self._ready.append(item)
        if len(self._ready) >= self._max:
            self.flush()

    def ready(self, conn: object, now_ns: int) -> None:
        """`conn`'s reader handed over everything it read. A lone client's batch runs now
        (no task switch, no wait); otherwise the batcher's task runs it once every reader
        woken with this one has added its requests."""
        if not self._ready:
            return
        if self.alone(conn, now_ns) and not self._others_runnable():
            self.flush()
        elif not self._woken:
            self._woken = True
            self._lot.unpark()

    async def run(self) -> None:
        """The batcher's task, for the daemon's life."""
        while True:
            await self._lot.park()
            # Readers woken by the same poll run in trio's current batch of tasks, which
            # no statistic counts: let that batch finish (and whatever it wakes) first.
            for _ in range(GATHER_YIELDS):
                await trio.lowlevel.checkpoint()
                if not self._others_runnable():
                    break
            self._woken = False
            self.flush()

    def flush(self) -> None:
        """Run what is ready and queue every reply (synchronous: nothing awaits inside)."""
        items, self._ready = self._ready, []
        if not items:
            return
        self.batches += 1
        self.operations += len(items)
        outcomes = run_batch(items, self._group())
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome is DEFERRED:
                self._waiting.append(item)
            else:
                item.conn.reply_now(item.call.msgid, *outcome)

    def defer(self, item: Ready) -> None:
        """`item`'s project is held by a bulk enqueue: run it once `requeue` is called."""
        self._waiting.append(item)

    def requeue(self) -> None:
        """A bulk enqueue let go of its queue: what waited for it runs (again, in order)."""
        if self._waiting:
            self._ready[:0] = self._waiting
            self._waiting = []
            if not self._woken:
                self._woken = True
                self._lot.unpark()


class SpinPolicy:
    """Whether to busy-poll for a connection's next request: only while it pays.

    Parking in epoll and waking costs ~40 us a request on a small VM, more than the
    request; a client in a tight conversation answers within microseconds, so polling
    for it first wins. A client that thinks between requests (or sends nothing) would
    only burn the poll: each miss costs credit, each hit restores it, and without credit
    the connection polls only once in `PROBE_EVERY` replies, to notice a change of pace.
    """

    MAX_CREDIT = 8
    MISS_COST = 2
    PROBE_EVERY = 64

    __slots__ = ("_skipped", "credit")

    def __init__(self) -> None:
        self.credit = self.MAX_CREDIT
        self._skipped = 0

    def should_spin(self) -> bool:
        if self.credit > 0:
            return True
        self._skipped += 1
        if self._skipped >= self.PROBE_EVERY:
            self._skipped = 0
            return True
        return False

    def record(self, hit: bool) -> None:
        if hit:
            self.credit = self.MAX_CREDIT
        else:
            self.credit = max(0, self.credit - self.MISS_COST)
