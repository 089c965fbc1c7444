"""The circuit breakers of one project's task types: state and transitions, in the store.

The state machine is `lokid.domain.breaker`; this keeps one `Breaker` per type in the
queue's database, and reports transitions. It runs inside the queue's transactions (the
unit of work), so a claim and the probe it reserves commit together.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lokid.domain import breaker as rules
from lokid.domain.breaker import Admission, Breaker
from lokid.queue.breaker_config import BreakerConfigs
from lokid.queue.unit import UnitOfWork
from lokid.store.base import BreakerRow, QueueStore
from lokid.wire.breakers import BreakerState
from lokid.wire.events import BREAKER_EVENTS
from lokid.wire.queue import Blocked
from lokid.wire.times import iso_or_none


def breaker_of(row: BreakerRow, probes: int = 0) -> Breaker:
    """A stored breaker as the state machine's `Breaker`."""
    return Breaker(
        row.state,  # type: ignore[arg-type]
        row.failures,
        row.last_failure,
        row.opened_at,
        row.half_open_at,
        row.forced,
        row.reason,
        probes,
    )


class Breakers:
    def __init__(self, store: QueueStore, unit: UnitOfWork, config: BreakerConfigs) -> None:
        self._store = store
        self._unit = unit
        self.config = config
        self._by_type: dict[str, Breaker] = {}
        # Copy-on-write undo for the open transaction: a rollback (a failed commit, a full
        # disk) puts back the breakers it changed, so memory never drifts from the database.
        # One level per savepoint (an operation of a group commit), innermost last.
        self._undo: list[dict[str, Breaker | None]] | None = None
        for row in store.breakers():
            self._by_type[row.type] = breaker_of(row)
        for task_type, probes in store.probes_in_flight():
            self._get(task_type).probes = probes
        unit.undoable.append(self)

    def _get(self, task_type: str) -> Breaker:
        b = self._by_type.get(task_type)
        if b is None:
            b = self._by_type[task_type] = Breaker()
        return b

    def _mutable(self, task_type: str) -> Breaker:
        """The breaker, about to change: remember it as it was for a rollback."""
        if self._undo is not None and task_type not in (level := self._undo[-1]):
            before = self._by_type.get(task_type)
            level[task_type] = None if before is None else replace(before)
        return self._get(task_type)

    # -- the unit of work's undo ---------------------------------------------------------

    def begin(self) -> None:
        if self._undo is None:
            self._undo = [{}]

    def commit(self) -> None:
        self._undo = None

    def rollback(self) -> None:
        for level in reversed(self._undo or []):  # the outermost's before-states win
            self._restore(level)
        self._undo = None

    def savepoint(self) -> None:
        if self._undo is not None:
            self._undo.append({})

    def release(self) -> None:
        if self._undo is not None and len(self._undo) > 1:
            inner = self._undo.pop()
            outer = self._undo[-1]
            for task_type, before in inner.items():
                outer.setdefault(task_type, before)

    def rollback_to(self) -> None:
        if self._undo is not None and len(self._undo) > 1:
            self._restore(self._undo.pop())

    def _restore(self, level: dict[str, Breaker | None]) -> None:
        for task_type, before in level.items():
            if before is None:
                self._by_type.pop(task_type, None)
            else:
                self._by_type[task_type] = before

    def _apply(self, task_type: str, b: Breaker, topics: list[str], changed: bool = False) -> None:
        """Store the breaker if anything changed, and announce its transitions."""
        if not topics and not changed:
            return
        self._store.save_breaker(
            BreakerRow(
                task_type, b.state, b.failures, b.last_failure, b.opened_at,
                b.half_open_at, b.forced, b.reason,
            )
        )  # fmt: skip
        self._unit.touch("breakers")
        for topic in topics:
            self._unit.emit(BREAKER_EVENTS[topic](type=task_type, **self._fields(task_type, b)))

    # -- what the queue asks -----------------------------------------------------------

    def admit(self, task_type: str, now: float) -> Admission:
        b = self._by_type.get(task_type)
        if b is None or b.state == "closed":
            return _OPEN_DOOR
        cfg = self.config.for_type(task_type)
        if rules.half_open_due(b, cfg, now):
            b = self._mutable(task_type)
            self._apply(task_type, b, rules.advance(b, cfg, now))
        return rules.admit(b, cfg)

    @staticmethod
    def blocked(admission: Admission) -> Blocked:
        return Blocked(admission.state, iso_or_none(admission.until))

    def probe_claimed(self, task_type: str, now: float) -> None:
        rules.probe_claimed(self._mutable(task_type))

    def probe_released(self, task_type: str) -> None:
        rules.probe_released(self._mutable(task_type))

    def record_failure(self, task_type: str, now: float, probe: bool) -> None:
        b = self._mutable(task_type)
        cfg = self.config.for_type(task_type)
        topics = rules.advance(b, cfg, now) + rules.record_failure(b, cfg, now, probe)
        self._apply(task_type, b, topics, changed=True)

    def record_success(self, task_type: str, now: float, probe: bool) -> None:
        b = self._by_type.get(task_type)
        if b is None or (b.state == "closed" and b.failures == 0):
            return
        b = self._mutable(task_type)
        topics = rules.record_success(b, probe)
        self._apply(task_type, b, topics, changed=True)

    def record_rate_limit(self, task_type: str, now: float, probe: bool) -> None:
        """Rate limits are never failures; a probe that hit one frees its slot."""
        if probe:
            self.probe_released(task_type)

    # -- manual control and reading ----------------------------------------------------

    def reset(self, task_type: str) -> BreakerState:
        b = self._mutable(task_type)
        self._apply(task_type, b, rules.reset(b))
        return self.view(task_type, b)

    def trip(self, task_type: str, now: float, reason: str) -> BreakerState:
        b = self._mutable(task_type)
        self._apply(task_type, b, rules.trip(b, now, reason))
        return self.view(task_type, b)

    def tick(self, now: float) -> None:
        """Turn due open breakers half-open now, so the event goes out without a claim."""
        for task_type, b in list(self._by_type.items()):
            cfg = self.config.for_type(task_type)
            if rules.half_open_due(b, cfg, now):
                b = self._mutable(task_type)
                self._apply(task_type, b, rules.advance(b, cfg, now))

    def next_half_open(self) -> float | None:
        times = [
            b.opened_at + self.config.for_type(t).half_open_after
            for t, b in self._by_type.items()
            if b.state == "open" and not b.forced and b.opened_at is not None
        ]
        return min(times, default=None)

    def listing(self, now: float) -> dict[str, BreakerState]:
        """Every known breaker, brought up to `now` (call inside a transaction)."""
        self.tick(now)
        return self.snapshot()

    def snapshot(self) -> dict[str, BreakerState]:
        return {t: self.view(t, b) for t, b in sorted(self._by_type.items())}

    def view(self, task_type: str, b: Breaker | None = None) -> BreakerState:
        """The state file's fields, as Loki Mode's reference names them."""
        return BreakerState(**self._fields(task_type, b or self._get(task_type)))

    def _fields(self, task_type: str, b: Breaker) -> dict[str, Any]:
        cfg = self.config.for_type(task_type)
        half_open_at = b.half_open_at
        if b.state == "open" and not b.forced and b.opened_at is not None:
            half_open_at = b.opened_at + cfg.half_open_after
        return {
            "state": b.state,
            "failures": b.failures,
            "last_failure": iso_or_none(b.last_failure),
            "opened_at": iso_or_none(b.opened_at),
            "half_open_at": iso_or_none(half_open_at),
            "forced": b.forced,
            "reason": b.reason,
        }


_OPEN_DOOR = Admission(True)
