"""The unit of work of one project's queue: a store transaction and everything that must
follow it only if it commits.

Operations record their side effects here as they go: events to publish, views to rewrite,
changes to the in-memory counts and leases, breakers changed. After the commit they are
applied, in order; after a rollback (a refused operation, a full disk) they are dropped and
the breakers put back, so memory never drifts from the database and no client hears of a
change that did not happen.

Group commit: inside a `GroupCommit` (the server runs each batch of ready requests in one),
the first operation on a project opens its transaction and every operation becomes a
savepoint in it. An operation that fails rolls back to its savepoint, its recorded effects
with it, and its neighbours carry on; the group then commits once per project (one fsync
at `full`), and only after that are effects applied and replies sent. A commit that fails
fails every operation that wrote in that project, and only those.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

from lokid.errors import QueueBusy
from lokid.store.base import QueueStore, TaskRow
from lokid.wire.events import EventData

Publish = Callable[[EventData], None]
Changed = Callable[[Iterable[str]], None]


class Undoable(Protocol):
    """In-memory state kept beside the store with its own undo (the breakers)."""

    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def savepoint(self) -> None:
        """Begin a nested level inside the open transaction."""

    def release(self) -> None:
        """The innermost level succeeded: fold it into the one around it."""

    def rollback_to(self) -> None:
        """The innermost level failed: put back what it changed, and drop it."""


class Mark(NamedTuple):
    """Where a savepoint began in the unit's records."""

    events: int
    counts: int
    leases: int


_MISSING = object()
_group: GroupCommit | None = None


class _OpFailed(Exception):
    """Thrown into an operation's savepoint to roll it back."""


class GroupCommit:
    """One transaction per unit of work for a run of operations (see the module's doc).

    Used as `with group:` around the operations, each between `begin_op(n)` and
    `end_op(ok)`; after the block, `failed` maps the operations whose commit failed to the
    exception. Nothing may await inside the block: the group is this thread's until it ends.
    """

    def __init__(self) -> None:
        self._units: dict[int, tuple[UnitOfWork, Any]] = {}
        self._ops: dict[int, set[int]] = {}  # unit -> operations that wrote in it
        self._op = 0
        self._savepoints: list[tuple[UnitOfWork, Any, Mark]] = []  # the current operation's
        self.failed: dict[int, BaseException] = {}
        self.memo: dict[Any, Any] = {}  # see batch_memo

    def __enter__(self) -> GroupCommit:
        global _group
        if _group is not None:
            raise RuntimeError("group commits do not nest")
        _group = self
        return self

    def begin_op(self, op: int) -> None:
        self._op = op

    def end_op(self, ok: bool) -> None:
        """The operation is over: keep its writes (RELEASE) or undo them alone (ROLLBACK TO),
        in every unit it wrote in. Raises StoreUnavailable if SQLite cannot do either."""
        savepoints, self._savepoints = self._savepoints, []
        error: BaseException | None = None
        for unit, cm, mark in reversed(savepoints):
            unit.depth -= 1
            try:
                if ok:
                    cm.__exit__(None, None, None)
                else:
                    cm.__exit__(_OpFailed, _OpFailed(), None)
            except BaseException as exc:
                ok, error = False, exc
            if ok:
                unit._release(mark)
            else:
                unit._rollback_to(mark)
        if error is not None:
            raise error

    def _join(self, unit: UnitOfWork) -> None:
        """`unit` is written in by the current operation: open its transaction once, and a
        savepoint for this operation in it."""
        key = id(unit)
        if key not in self._units:
            if unit.depth:  # a transaction of its own is open across awaits: a bulk enqueue's
                raise QueueBusy("this project's queue is taking a bulk enqueue")
            cm = unit.store.transaction()
            cm.__enter__()  # BEGIN; may raise StoreUnavailable, which fails this operation
            self._units[key] = (unit, cm)
            self._ops[key] = set()
            unit.depth = 1
            unit.grouped = True
            unit._begin()
        if unit.depth == 1:  # no savepoint of this operation's in it yet
            sp = unit.store.savepoint()
            sp.__enter__()
            unit.depth = 2
            self._savepoints.append((unit, sp, unit._mark()))
        self._ops[key].add(self._op)

    def __exit__(self, *exc_info: Any) -> None:
        global _group
        _group = None
        if self._savepoints:  # the block failed mid-operation
            with contextlib.suppress(Exception):
                self.end_op(ok=False)
        for key, (unit, cm) in self._units.items():
            unit.depth = 0
            unit.grouped = False
            try:
                cm.__exit__(*exc_info)  # COMMIT (ROLLBACK when the block itself failed)
            except Exception as exc:
                unit._rollback()
                for op in self._ops[key]:
                    self.failed[op] = exc
                continue
            if exc_info[0] is None:
                unit._commit()
            else:
                unit._rollback()
        self._units.clear()


def batch_memo() -> dict[Any, Any] | None:
    """A dict for the running group commit's life, None outside one: what its operations
    may read once for all of them (they all happen at one moment, before one commit)."""
    return None if _group is None else _group.memo


class UnitOfWork:
    # Whether its operations join a group commit (a shared database's do not: each of its
    # transactions sends its notifications with its own commit, see queue/shared.py).
    groupable = True

    def __init__(
        self,
        store: QueueStore,
        publish: Publish,
        changed: Changed,
        lease_set: Callable[[float], None],
    ) -> None:
        self.store = store
        self._publish = publish
        self._changed = changed
        self._lease_set = lease_set
        # Leases and counts are kept here, not indexed in the database (each index costs
        # every claim a page): rebuilt from one scan at open, changed only at commit.
        self.leases: dict[str, float] = dict(store.leases())
        self.counts: Counter[tuple[str, str]] = Counter(
            {(state, task_type): n for state, task_type, n in store.counts()}
        )
        self.undoable: list[Undoable] = []
        self._events: list[EventData] = []
        self._dirty: set[str] = set()
        self._delta_counts: Counter[tuple[str, str]] = Counter()
        self._delta_leases: dict[str, float | None] = {}
        # What each count and lease change replaced, so a savepoint can be undone alone.
        self._count_journal: list[tuple[tuple[str, str], int]] = []
        self._lease_journal: list[tuple[str, Any]] = []
        self.depth = 0
        self.grouped = False  # inside a GroupCommit: operations are savepoints
        # Set by a bulk enqueue: committed events are kept here for it to publish in
        # chunks, with the event loop turning between them, instead of all at once.
        self.held_events: list[EventData] | None = None

    # -- recorded during the transaction ---------------------------------------------

    def emit(self, event: EventData) -> None:
        self._events.append(event)

    def publish(self, event: EventData) -> None:
        """Publish a committed event now (what `held_events` kept back)."""
        self._publish(event)

    def touch(self, *states: str) -> None:
        """These views (states, or `breakers`) must be rewritten."""
        self._dirty.update(states)

    def count(self, state: str, task_type: str, delta: int) -> None:
        self._delta_counts[(state, task_type)] += delta
        if self.grouped:
            self._count_journal.append(((state, task_type), delta))

    def lease(self, task_id: str, until: float | None) -> None:
        """The task's lease now ends at `until` (None: it holds none)."""
        if self.grouped:
            self._lease_journal.append((task_id, self._delta_leases.get(task_id, _MISSING)))
        self._delta_leases[task_id] = until

    # -- read by the queue (queue/shared.py reads these from the store instead) -------

    def expired(self, now: float) -> list[TaskRow]:
        """In-progress tasks whose lease ended by `now`, soonest first (in a transaction)."""
        due = sorted((until, task_id) for task_id, until in self.leases.items() if until <= now)
        return [row for _, task_id in due if (row := self.store.get(task_id)) is not None]

    def next_lease(self) -> float | None:
        return min(self.leases.values(), default=None)

    def current_counts(self) -> Counter[tuple[str, str]]:
        return self.counts

    def idle(self) -> bool:
        return not self.leases

    # -- the transaction -------------------------------------------------------------

    def __call__(self) -> _Transaction:
        return _Transaction(self)

    def _begin(self) -> None:
        for part in self.undoable:
            part.begin()

    def _commit(self) -> None:
        for part in self.undoable:
            part.commit()
        self.counts.update(self._delta_counts)
        self._delta_counts.clear()
        self._count_journal.clear()
        self._lease_journal.clear()
        soonest = None
        for task_id, until in self._delta_leases.items():
            if until is None:
                self.leases.pop(task_id, None)
            else:
                self.leases[task_id] = until
                soonest = until if soonest is None else min(soonest, until)
        self._delta_leases.clear()
        if soonest is not None:
            self._lease_set(soonest)
        events, self._events = self._events, []
        dirty, self._dirty = self._dirty, set()
        if self.held_events is not None:
            self.held_events += events
            events = []
        for event in events:
            self._publish(event)
        if dirty:
            self._changed(dirty)

    def _rollback(self) -> None:
        for part in self.undoable:
            part.rollback()
        self._events.clear()
        self._dirty.clear()
        self._delta_counts.clear()
        self._delta_leases.clear()
        self._count_journal.clear()
        self._lease_journal.clear()

    # -- savepoints (operations of a group commit) -------------------------------------

    def _mark(self) -> Mark:
        for part in self.undoable:
            part.savepoint()
        return Mark(len(self._events), len(self._count_journal), len(self._lease_journal))

    def _release(self, mark: Mark) -> None:
        for part in self.undoable:
            part.release()

    def _rollback_to(self, mark: Mark) -> None:
        """Forget what was recorded since `mark` (views marked dirty stay: a spare rewrite)."""
        for part in self.undoable:
            part.rollback_to()
        del self._events[mark.events :]
        counts = self._count_journal
        while len(counts) > mark.counts:
            key, delta = counts.pop()
            self._delta_counts[key] -= delta
        leases = self._lease_journal
        while len(leases) > mark.leases:
            task_id, before = leases.pop()
            if before is _MISSING:
                self._delta_leases.pop(task_id, None)
            else:
                self._delta_leases[task_id] = before


class _Transaction:
    """The store's transaction, then the unit's effects once it committed (nested uses join).

    Inside a group commit the group holds the transaction and a savepoint for the running
    operation (`GroupCommit._join`): the operation's own transactions join it.
    """

    __slots__ = ("_cm", "_unit")

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    def __enter__(self) -> None:
        unit = self._unit
        if _group is not None and unit.depth <= 1 and unit.groupable:
            _group._join(unit)  # depth is now 2: the group's transaction and savepoint
        self._cm = unit.store.transaction()
        self._cm.__enter__()
        unit.depth += 1
        if unit.depth == 1:
            unit._begin()

    def __exit__(self, *exc_info: Any) -> None:
        unit = self._unit
        unit.depth -= 1
        try:
            self._cm.__exit__(*exc_info)
        except BaseException:
            if unit.depth == 0:
                unit._rollback()
            raise
        if unit.depth:
            return  # the outermost transaction (or the group) decides
        if exc_info[0] is None:
            unit._commit()
        else:
            unit._rollback()
