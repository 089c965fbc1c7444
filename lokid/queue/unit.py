"""The unit of work of one project's queue: a store transaction and everything that must
follow it only if it commits.

Operations record their side effects here as they go: events to publish, views to rewrite,
changes to the in-memory counts and leases, breakers changed. After the commit they are
applied, in order; after a rollback (a refused operation, a full disk) they are dropped and
the breakers put back, so memory never drifts from the database and no client hears of a
change that did not happen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from lokid.store.base import QueueStore, TaskRow
from lokid.wire.events import EventData

Publish = Callable[[EventData], None]
Changed = Callable[[Iterable[str]], None]


class Undoable(Protocol):
    """In-memory state kept beside the store with its own undo (the breakers)."""

    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


class UnitOfWork:
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
        self.depth = 0

    # -- recorded during the transaction ---------------------------------------------

    def emit(self, event: EventData) -> None:
        self._events.append(event)

    def touch(self, *states: str) -> None:
        """These views (states, or `breakers`) must be rewritten."""
        self._dirty.update(states)

    def count(self, state: str, task_type: str, delta: int) -> None:
        self._delta_counts[(state, task_type)] += delta

    def lease(self, task_id: str, until: float | None) -> None:
        """The task's lease now ends at `until` (None: it holds none)."""
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


class _Transaction:
    """The store's transaction, then the unit's effects once it committed (nested uses join)."""

    __slots__ = ("_cm", "_unit")

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit
        self._cm = unit.store.transaction()

    def __enter__(self) -> None:
        self._cm.__enter__()
        unit = self._unit
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
            return  # the outermost transaction decides
        if exc_info[0] is None:
            unit._commit()
        else:
            unit._rollback()
