"""The queue over a store that other lokid instances write too (PostgreSQL).

A lokid alone on its SQLite file trusts its memory: per-state counts, lease deadlines, the
breakers and which tasks have dependents are kept beside the database and changed only at
commit. With several instances on one database none of that holds, so when the store says it
is `shared`, the queue swaps in the two parts below, and nothing else changes:

- `SharedUnit` keeps no counts or leases: it reads them from the store, and takes the expired
  leases with `FOR UPDATE SKIP LOCKED` inside the sweep's transaction, so whichever instance
  gets there first expires a lease, exactly once. Its events and view changes are not
  published at commit: they go out *with* the commit as one NOTIFY, and every instance (this
  one too) publishes them as they arrive (`Notices`), so every subscriber sees one project's
  events in one order, the database's commit order.
- `SharedBreakers` reads each breaker from the store in every transaction that uses it, locks
  its row before changing it, and counts half-open probes from the tasks under that lock, so
  transitions and probe reservations are atomic across instances. A claim never waits for a
  breaker another instance is changing: it is refused for that type, as if the probe slots
  were taken (SKIP LOCKED, as for tasks).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from lokid.domain import breaker as rules
from lokid.domain.breaker import Admission, Breaker
from lokid.errors import StoreUnavailable
from lokid.queue.breakers import Breakers, breaker_of
from lokid.queue.unit import UnitOfWork
from lokid.store.base import BreakerRow, QueueStore, TaskRow
from lokid.wire.events import EVENT_TYPES, EventData

# NOTIFY payloads are at most 8000 bytes; a transaction's events are split into parts under
# this, and an event's long texts (an agent's error message) are cut to fit.
NOTICE_MAX = 7000
TEXT_MAX = 1000


class SharedStore(QueueStore, Protocol):
    """What a shared store adds to `QueueStore` (see lokid/store/postgres.py)."""

    shared: bool
    outgoing: Callable[[], list[str]] | None

    def due_leases(self, now: float) -> list[TaskRow]: ...
    def next_lease(self) -> float | None: ...
    def breakers_of(self, types: list[str]) -> list[BreakerRow]: ...
    def lock_breaker(self, task_type: str, wait: bool) -> BreakerRow | bool | None: ...
    def probes(self, task_type: str) -> int: ...


def is_shared(store: QueueStore) -> bool:
    return bool(getattr(store, "shared", False))


# -- notices: a transaction's events and view changes, as NOTIFY payloads ------------------

_TOPICS: dict[str, type[Any]] = {
    t.TOPIC: t for t in EVENT_TYPES if t.TOPIC.startswith(("queue.", "breaker."))
}
_encode = msgspec.json.Encoder().encode


class Notice(msgspec.Struct):
    """One NOTIFY: part `p` of a transaction's events `e` ([topic, data] pairs) and, in the
    last part, the views `d` it changed."""

    p: int
    e: list[tuple[str, msgspec.Raw]]
    d: list[str] = []


_decode_notice = msgspec.json.Decoder(Notice).decode


def _item(event: EventData) -> bytes:
    item = _encode((event.TOPIC, event))
    if len(item) <= NOTICE_MAX // 2:
        return item
    data = {
        k: (v[:TEXT_MAX] + "...") if isinstance(v, str) and len(v) > TEXT_MAX else v
        for k, v in msgspec.to_builtins(event).items()
    }
    return _encode((event.TOPIC, data))


def encode_notices(events: list[EventData], dirty: set[str]) -> list[str]:
    """The payloads that carry a transaction's events and view changes, in order."""
    if not events and not dirty:
        return []
    parts: list[list[bytes]] = [[]]
    size = 0
    for item in map(_item, events):
        if parts[-1] and size + len(item) > NOTICE_MAX:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += len(item) + 1
    last = len(parts) - 1
    out = []
    for n, items in enumerate(parts):
        views = _encode(sorted(dirty)) if n == last else b"[]"
        out.append((b'{"p":%d,"e":[%s],"d":%s}' % (n, b",".join(items), views)).decode())
    return out


def decode_notice(payload: str) -> tuple[list[EventData], list[str]]:
    """A payload back into typed events (unknown topics are skipped) and view names."""
    notice = _decode_notice(payload)
    events = []
    for topic, raw in notice.e:
        kind = _TOPICS.get(topic)
        if kind is not None:
            events.append(msgspec.json.decode(raw, type=kind))
    return events, notice.d


# -- the unit of work --------------------------------------------------------------------


class SharedUnit(UnitOfWork):
    groupable = False  # each transaction commits (and notifies) on its own

    def __init__(self, store: SharedStore, *args: Any) -> None:
        super().__init__(store, *args)
        self.shared_store = store
        self.leases.clear()  # never trusted here: see `expired`, `next_lease`, `idle`
        self.counts.clear()
        store.outgoing = self._outgoing

    def _outgoing(self) -> list[str]:
        """Called by the store just before COMMIT: the NOTIFY payloads to send with it."""
        return encode_notices(self._events, self._dirty)

    def _commit(self) -> None:
        """Committed: the events left with the commit; only the sweeper's wake-up is ours."""
        for part in self.undoable:
            part.commit()
        soonest = min((u for u in self._delta_leases.values() if u is not None), default=None)
        self._delta_leases.clear()
        self._delta_counts.clear()
        self._events.clear()
        self._dirty.clear()
        if soonest is not None:
            self._lease_set(soonest)

    def expired(self, now: float) -> list[TaskRow]:
        return self.shared_store.due_leases(now)

    def next_lease(self) -> float | None:
        return self.shared_store.next_lease()

    def current_counts(self) -> Counter[tuple[str, str]]:
        return Counter({(s, t): n for s, t, n in self.store.counts()})

    def idle(self) -> bool:
        """No lease held in the project, by any instance (the database away: not idle)."""
        try:
            return self.shared_store.next_lease() is None
        except StoreUnavailable:
            return False


# -- the breakers ------------------------------------------------------------------------


class SharedBreakers(Breakers):
    """Breakers whose memory lives one transaction: read from the store when first used in
    it, locked before they change (`_mutable`), read afresh outside transactions."""

    def __init__(self, store: SharedStore, unit: UnitOfWork, config: Any) -> None:
        super().__init__(store, unit, config)
        self._shared = store
        self._fresh: set[str] = set()  # read from the store in this transaction
        self._locked: set[str] = set()  # and locked

    def begin(self) -> None:
        super().begin()
        self._fresh.clear()
        self._locked.clear()

    def commit(self) -> None:
        super().commit()
        self._locked.clear()  # the locks went with the transaction

    def rollback(self) -> None:
        """Nothing this transaction read or changed is worth keeping."""
        super().rollback()
        self._by_type.clear()
        self._fresh.clear()
        self._locked.clear()

    def _put(self, task_type: str, row: BreakerRow | None, probes: int = 0) -> None:
        if row is None:
            self._by_type.pop(task_type, None)
            return
        self._by_type[task_type] = breaker_of(row, probes)

    def _peek(self, task_type: str) -> Breaker | None:
        """The breaker as committed (unlocked), once per transaction."""
        if task_type not in self._fresh:
            rows = self._shared.breakers_of([task_type])
            self._put(task_type, rows[0] if rows else None)
            self._fresh.add(task_type)
        return self._by_type.get(task_type)

    def _lock(self, task_type: str, wait: bool) -> bool:
        """Read the breaker under its row lock (False: another transaction holds it and
        `wait` is off); half-open probes in flight are counted from the tasks."""
        if task_type in self._locked:
            return True
        row = self._shared.lock_breaker(task_type, wait)
        if row is False:
            return False
        assert row is not True
        half_open = row is not None and row.state == "half-open"
        self._put(task_type, row, self._shared.probes(task_type) if half_open else 0)
        self._fresh.add(task_type)
        self._locked.add(task_type)
        return True

    def _refresh_all(self) -> None:
        locked = {t: self._by_type[t] for t in self._locked if t in self._by_type}
        self._by_type.clear()
        for row in self._shared.breakers():
            if row.type not in locked:
                self._put(row.type, row)
                self._fresh.add(row.type)
        self._by_type.update(locked)

    def _get(self, task_type: str) -> Breaker:
        self._peek(task_type)
        return super()._get(task_type)

    def _mutable(self, task_type: str) -> Breaker:
        self._lock(task_type, wait=True)
        return super()._mutable(task_type)

    def admit(self, task_type: str, now: float) -> Admission:
        b = self._peek(task_type)
        if b is None or b.state == "closed":
            return Admission(True)
        if not self._lock(task_type, wait=False):
            seen = rules.admit(b, self.config.for_type(task_type))
            return seen if not seen.allowed else Admission(False, state=b.state)
        return super().admit(task_type, now)

    def record_success(self, task_type: str, now: float, probe: bool) -> None:
        self._peek(task_type)
        super().record_success(task_type, now, probe)

    def tick(self, now: float) -> None:
        """Due open breakers turn half-open: by one instance, the one that locks the row."""
        self._refresh_all()
        for task_type, b in list(self._by_type.items()):
            cfg = self.config.for_type(task_type)
            if rules.half_open_due(b, cfg, now) and self._lock(task_type, wait=False):
                b = super()._mutable(task_type)
                self._apply(task_type, b, rules.advance(b, cfg, now))

    def next_half_open(self) -> float | None:
        self._refresh_all()
        return super().next_half_open()

    def snapshot(self) -> dict[str, Any]:
        # The view keeps the last state read while the server is away.
        with contextlib.suppress(StoreUnavailable):
            self._refresh_all()
        return super().snapshot()


def parts(
    store: QueueStore, publish: Any, changed: Any, lease_set: Any, config: Any
) -> tuple[UnitOfWork, Breakers]:
    """The unit of work and breakers for `store`: in memory, or shared through it."""
    if is_shared(store):
        unit: UnitOfWork = SharedUnit(store, publish, changed, lease_set)  # type: ignore[arg-type]
        return unit, SharedBreakers(store, unit, config)  # type: ignore[arg-type]
    unit = UnitOfWork(store, publish, changed, lease_set)
    return unit, Breakers(store, unit, config)
