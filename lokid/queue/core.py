"""One project's task queue: the domain's rules applied to the store, with events.

Every operation is one SQLite transaction on the trio thread (they take tens
of microseconds), so operations are atomic with respect to each other: two
agents can never hold the same task. Events are published only after the
transaction commits (see unit.py), and a reply is sent only after that, so
whatever a client was told has happened is on disk.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec
import trio

from lokid.domain import queue as rules
from lokid.domain.queue import decide_failure, idempotency_key
from lokid.errors import Conflict, InvalidParams, NotFound, QueueBusy, TooLarge
from lokid.queue.breaker_config import BreakerConfigs
from lokid.queue.breakers import Breakers
from lokid.queue.loki_tasks import (
    decode_task,
    encode_extras,
    from_loki,
    parse_new_task,
    priority,
    task_doc,
    wire_task,
)
from lokid.queue.shared import is_shared, parts
from lokid.queue.unit import Changed, Publish
from lokid.store.base import QueueStore, TaskRow
from lokid.wire import events as ev
from lokid.wire.queue import (
    STATES,
    Blocked,
    ClaimResult,
    Enqueued,
    NewTask,
    Stats,
    Task,
    TaskResult,
    TaskState,
)
from lokid.wire.times import iso, parse_iso

log = logging.getLogger("lokid.queue")

# One task's JSON document (with its extra fields) at most: a task is a message, not a
# file store, and a 200 MB task once cost 7 s and 2.4 GB to take in.
MAX_TASK_BYTES = 1024 * 1024


class Prepared(NamedTuple):
    """A task parsed for enqueueing, before the database is asked anything."""

    new: NewTask
    extras: dict[str, Any]
    key: str
    where: str
    loki_priority: str | None = None  # a story's priority as Loki Mode wrote it


class Claim(NamedTuple):
    agent: str
    capabilities: list[str]
    lease: float | None = None


class Queue:
    def __init__(
        self,
        project: str,
        store: QueueStore,
        breaker_config: BreakerConfigs,
        publish: Publish,
        changed: Changed,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        lease_set: Callable[[float], None] | None = None,
    ) -> None:
        self.project = project
        self.store = store
        # In memory, or read from a store other lokid instances share (queue/shared.py).
        self._shared = is_shared(store)
        self._unit, self.breakers = parts(
            store, publish, changed, lease_set or (lambda until: None), breaker_config
        )
        # Ids some task depends on: most completions release nobody and skip the update.
        # A superset is harmless (it only costs that update), so it never shrinks.
        # (Shared: another instance may add a dependent at any time; always update.)
        self._depended_on: set[str] = set() if self._shared else store.depended_on()
        self.clock = clock
        self.rng = rng or random.Random()
        self.bulk = False  # inside a bulk enqueue's transaction (see QueueArea.bulk)

    def transaction(self):
        """The store's transaction, with this queue's events and view updates after commit."""
        return self._unit()

    def _row(self, task_id: str) -> TaskRow:
        row = self.store.get(task_id)
        if row is None:
            raise NotFound(f"no task {task_id!r} in {self.project}")
        return row

    def _save(self, row: TaskRow, task: Task, state: str) -> None:
        """Store a task's new state, with everything that follows from the move."""
        unit = self._unit
        unit.touch(row.state, state)
        if row.state != state:
            unit.count(row.state, row.type, -1)
            unit.count(state, row.type, +1)
            change = rules.key_change(row.state, state)
            if change == "release":
                self.store.release_key(task.idempotency_key, row.id)
            elif change == "hold":
                self.store.hold_key(task.idempotency_key, row.id)
        held = state == "in-progress" and row.lease_until is not None
        unit.lease(row.id, row.lease_until if held else None)
        task.lease_until = iso(row.lease_until) if held else None
        row.state = state
        row.doc = task_doc(task)
        self.store.update(row)

    # -- enqueue -----------------------------------------------------------------------

    def enqueue(self, raw: dict[str, Any]) -> Enqueued:
        return self.add_prepared([self.prepare_one(raw, "task")])[0]

    def enqueue_many(self, raws: list[dict[str, Any]]) -> list[Enqueued]:
        """All or nothing: one bad task rejects the batch, naming its index."""
        return self.add_prepared(self.prepare(raws))

    def prepare(self, raws: list[dict[str, Any]], first: int = 0) -> list[Prepared]:
        return self.prepare_one_chunk(raws, first)

    @classmethod
    def prepare_one_chunk(cls, raws: list[dict[str, Any]], first: int = 0) -> list[Prepared]:
        """The part of an enqueue that needs no database (parsing, idempotency keys): done
        before the transaction, in chunks between which other clients are served."""
        return [cls.prepare_one(raw, f"tasks[{i}]") for i, raw in enumerate(raws, first)]

    @staticmethod
    def prepare_one(raw: dict[str, Any], where: str, loki_priority: str | None = None) -> Prepared:
        new, extras = parse_new_task(raw, where)
        try:
            key = idempotency_key(new.payload)
        except ValueError as exc:
            raise InvalidParams(f"{where}: payload is not JSON: {exc}") from exc
        return Prepared(new, extras, new.idempotency_key or key, where, loki_priority)

    def add_prepared(self, items: list[Prepared]) -> list[Enqueued]:
        """Enqueue prepared tasks in one transaction: all or nothing."""
        now = self.clock()
        with self.transaction():
            return self._add_all(items, now)

    async def add_in_chunks(self, items: list[Prepared], chunk: int) -> list[Enqueued]:
        """`add_prepared` for a big batch: still one transaction (all or nothing, and a
        reply only after its commit), with the other clients served between chunks. The
        caller holds the queue's bulk gate (`QueueArea.bulk`), so nothing else joins this
        transaction or reads it half-written while it waits."""
        now = self.clock()
        results: list[Enqueued] = []
        unit = self._unit
        unit.held_events = held = []
        try:
            with self.transaction():
                for start in range(0, len(items), chunk):
                    if start:
                        await trio.sleep(0)
                    results += self._add_all(items[start : start + chunk], now)
        finally:
            unit.held_events = None
        for start in range(0, len(held), chunk):  # committed: now tell the subscribers
            await trio.sleep(0)
            for event in held[start : start + chunk]:
                unit.publish(event)
        return results

    def _add_all(self, items: list[Prepared], now: float) -> list[Enqueued]:
        """Each task as if enqueued one after the other, with the database asked once for
        all of them (live keys, ids taken, dependencies) and the rows written together."""
        store = self.store
        live = store.live_ids_for_keys({p.key for p in items})
        taken = store.states_of({p.new.id for p in items if p.new.id})
        states = store.states_of({d for p in items for d in p.new.dependencies})
        created = iso(now)
        results: list[Enqueued] = []
        rows: list[tuple[TaskRow, list[str], str, str, str | None]] = []
        for p in items:
            existing = live.get(p.key)
            if existing is not None:
                results.append(Enqueued(existing, True))
                continue
            row, deps = self._new_row(p, created, taken, states)
            rows.append((row, deps, p.key, created, p.loki_priority))
            live[p.key] = row.id
            taken[row.id] = states[row.id] = "pending"
            results.append(Enqueued(row.id, False))
        store.insert_many(rows)
        unit = self._unit
        for row, deps, *_ in rows:
            if not self._shared:
                self._depended_on.update(deps)
            unit.count("pending", row.type, +1)
            unit.emit(ev.QueueEnqueued(id=row.id, type=row.type, priority=row.priority))
        if rows:
            unit.touch("pending")
        return results

    def _new_row(
        self, p: Prepared, created: str, taken: dict[str, str], states: dict[str, str]
    ) -> tuple[TaskRow, list[str]]:
        new, where = p.new, p.where
        task_id = new.id or str(uuid.uuid4())
        if task_id in taken:
            raise Conflict(f"{where}: a task with id {task_id!r} already exists")
        deps = list(dict.fromkeys(new.dependencies))
        missing = [d for d in deps if d not in states]
        if missing:
            raise InvalidParams(f"{where}: dependencies name unknown tasks: {', '.join(missing)}")
        task = Task(
            id=task_id,
            idempotency_key=p.key,
            type=new.type,
            priority=priority(new.priority, where),
            dependencies=deps,
            payload=new.payload,
            created_at=created,
            timeout=new.timeout,
            max_retries=new.max_retries,
            backoff_seconds=new.backoff_seconds,
        )
        doc, extra = task_doc(task, where), encode_extras(p.extras, where)
        size = len(doc) + (len(extra) if extra else 0)
        if size > MAX_TASK_BYTES:
            raise TooLarge(
                f"{where}: the task is {size:,} bytes as JSON; at most {MAX_TASK_BYTES:,} "
                "(keep large data in files and put their paths in the payload)",
                {"limit": MAX_TASK_BYTES, "size": size},
            )
        row = TaskRow(
            seq=0,
            id=task_id,
            state="pending",
            type=task.type,
            priority=task.priority,
            available_at=0.0,
            deps_left=sum(1 for d in deps if states[d] != "completed"),
            lease_until=None,
            claimed_by=None,
            rate_limits=0,
            probe=False,
            doc=doc,
            extra=extra,
        )
        return row, deps

    # -- claim and leases --------------------------------------------------------------

    def claim(self, agent: str, capabilities: list[str], lease: float | None) -> ClaimResult:
        now = self.clock()
        with self.transaction():
            return self._claim(Claim(agent, capabilities, lease), now)

    def _claim(self, claim: Claim, now: float) -> ClaimResult:
        """The claim itself, inside the caller's transaction."""
        allowed: dict[str, bool] = {}  # type -> whether its claim is a breaker's probe
        blocked: dict[str, Blocked] = {}
        for task_type in dict.fromkeys(claim.capabilities):
            admission = self.breakers.admit(task_type, now)
            if admission.allowed:
                allowed[task_type] = admission.probe
            else:
                blocked[task_type] = Breakers.blocked(admission)
        best = self.store.next_candidate(list(allowed), now) if allowed else None
        if best is None:
            return ClaimResult(task=None, blocked=blocked or None)
        best_probe = allowed[best.type]
        task = decode_task(best.doc)
        task.claimed_by = claim.agent
        task.claimed_at = iso(now)
        best.claimed_by = claim.agent
        best.lease_until = now + (claim.lease or task.timeout)
        best.probe = best_probe
        if best_probe:
            self.breakers.probe_claimed(task.type, now)
        self._save(best, task, "in-progress")
        self._unit.emit(ev.QueueClaimed(id=task.id, type=task.type, agent=claim.agent))
        return ClaimResult(task=wire_task(task, best.extra))

    def heartbeat(self, task_id: str, agent: str, lease: float | None) -> float:
        now = self.clock()
        with self.transaction():
            row = self._held(task_id, agent)
            task = decode_task(row.doc)
            row.lease_until = now + (lease or task.timeout)
            task.lease_until = iso(row.lease_until)
            row.doc = task_doc(task)
            self.store.update(row)
            self._unit.lease(row.id, row.lease_until)
        return row.lease_until

    def _held(self, task_id: str, agent: str) -> TaskRow:
        row = self._row(task_id)
        rules.check_held(task_id, row.state, row.claimed_by, agent)
        return row

    def expire_leases(self) -> int:
        """Each lease that ran out is a failed attempt (`lease expired`), each in its own
        transaction: one task that cannot be failed (a bug, a bad value) never rolls back
        the others' expiry, and is tried again at the next sweep."""
        now = self.clock()
        if self._shared:  # rows locked (SKIP LOCKED) and failed in one transaction
            with self.transaction():
                rows = self._unit.expired(now)
                for row in rows:
                    self._expire(row, now)
            return len(rows)
        leases = self._unit.leases
        due = sorted((until, task_id) for task_id, until in leases.items() if until <= now)
        expired = 0
        for _, task_id in due:
            try:
                with self.transaction():
                    row = self.store.get(task_id)
                    if row is None or row.state != "in-progress":
                        self._unit.lease(task_id, None)
                        continue
                    self._expire(row, now)
                expired += 1
            except Exception:
                log.exception("expiring the lease of %s in %s failed", task_id, self.project)
        return expired

    def _expire(self, row: TaskRow, now: float) -> None:
        self._unit.emit(ev.QueueLeaseExpired(id=row.id, type=row.type, agent=row.claimed_by))
        self._fail_row(row, "lease expired", None, now)

    def next_lease_deadline(self) -> float | None:
        return self._unit.next_lease()

    # -- outcomes ----------------------------------------------------------------------

    def complete(
        self, task_id: str, agent: str, result: dict[str, Any], then: Claim | None = None
    ) -> TaskState:
        """Complete a held task; with `then`, claim the agent's next one in the same
        transaction (one commit and one round trip for a worker's whole cycle)."""
        rules.check_decision_report(result)
        try:
            outcome = msgspec.convert(result, TaskResult)
        except msgspec.ValidationError as exc:
            raise InvalidParams(f"result: {exc}") from exc
        now = self.clock()
        with self.transaction():
            row = self._held(task_id, agent)
            task = decode_task(row.doc)
            task.completed_at = iso(now)
            task.result = outcome
            row.lease_until = None
            row.rate_limits = 0
            self.breakers.record_success(task.type, now, row.probe)
            row.probe = False
            self._save(row, task, "completed")
            if self._shared or task_id in self._depended_on:
                self.store.release_dependents(task_id)
            self._unit.emit(ev.QueueCompleted(id=task_id, type=task.type, agent=agent))
            claimed = None if then is None else self._claim(then, now)
        return TaskState(wire_task(task, row.extra), "completed", claimed)

    def fail(
        self,
        task_id: str,
        agent: str,
        error: str,
        retry_after: float | None = None,
        then: Claim | None = None,
    ) -> TaskState:
        """Fail a held task; `then` as for `complete`."""
        now = self.clock()
        with self.transaction():
            row = self._held(task_id, agent)
            task = self._fail_row(row, error, retry_after, now)
            claimed = None if then is None else self._claim(then, now)
        return TaskState(wire_task(task, row.extra), row.state, claimed)  # type: ignore[arg-type]

    def _fail_row(self, row: TaskRow, error: str, retry_after: float | None, now: float) -> Task:
        task = decode_task(row.doc)
        outcome = decide_failure(
            retries=task.retries,
            max_retries=task.max_retries,
            backoff_seconds=task.backoff_seconds,
            error=error,
            retry_after=retry_after,
            rate_limits=row.rate_limits,
            rng=self.rng,
        )
        task.retries = outcome.retries
        task.last_error = error
        task.claimed_by = None
        task.claimed_at = None
        row.claimed_by = None
        row.lease_until = None
        row.rate_limits = outcome.rate_limits
        if outcome.kind == "rate-limited":
            self.breakers.record_rate_limit(task.type, now, row.probe)
        else:
            self.breakers.record_failure(task.type, now, row.probe)
        row.probe = False
        if outcome.kind == "dead-letter":
            task.available_at = None
            self._save(row, task, "dead-letter")
            self._unit.emit(
                ev.QueueDeadLettered(id=task.id, type=task.type, retries=task.retries, error=error)
            )
            return task
        row.available_at = now + outcome.delay
        task.available_at = iso(row.available_at)
        self._save(row, task, "pending")
        rate_limited = outcome.kind == "rate-limited"
        self._unit.emit(
            ev.QueueRetrying(
                id=task.id,
                type=task.type,
                retries=task.retries,
                available_at=task.available_at,
                error=error,
                rate_limited=rate_limited,
            )
        )
        if rate_limited:
            self._unit.emit(ev.QueueSlowdown(type=task.type, wait=outcome.delay / 2))
        return task

    def cancel(self, task_id: str, reason: str) -> list[str]:
        now = self.clock()
        with self.transaction():
            row = self._row(task_id)
            rules.check_cancellable(task_id, row.state)
            cancelled: list[str] = []
            self._cancel_tree(row, reason, now, cancelled)
        return cancelled

    def _cancel_tree(self, root: TaskRow, reason: str, now: float, out: list[str]) -> None:
        """Cancel `root` and, breadth first, every live task that depends on it."""
        todo = [(root, reason)]
        while todo:
            row, why = todo.pop(0)
            task = decode_task(row.doc)
            task.cancelled_at = iso(now)
            task.cancel_reason = why
            if row.probe:
                self.breakers.probe_released(task.type)
            row.lease_until = None
            row.probe = False
            self._save(row, task, "cancelled")
            out.append(task.id)
            self._unit.emit(ev.QueueCancelled(id=task.id, type=task.type, reason=why))
            todo += [
                (child, rules.cascade_reason(task.id))
                for child in self.store.dependents(task.id)
                if rules.cascades_to(child.state)
            ]

    # -- reading -----------------------------------------------------------------------

    def get(self, task_id: str) -> TaskState:
        row = self._row(task_id)
        return TaskState(wire_task(decode_task(row.doc), row.extra), row.state)  # type: ignore[arg-type]

    def page(self, state: str | None, task_type: str | None, limit: int, cursor: str | None):
        try:
            after = int(cursor) if cursor else 0
        except ValueError:
            after = -1
        if not 0 <= after < 2**63:
            raise InvalidParams(f"cursor {cursor!r} is not one this daemon gave out")
        rows = self.store.page(state, task_type, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = str(rows[-1].seq) if more and rows else None
        return [wire_task(decode_task(r.doc), r.extra) for r in rows], next_cursor

    def stats(self) -> Stats:
        states = dict.fromkeys(STATES, 0)
        types: dict[str, dict[str, int]] = {}
        for (state, task_type), count in sorted(self._unit.current_counts().items()):
            if count:
                states[state] += count
                types.setdefault(task_type, {})[state] = count
        oldest = self.store.oldest_pending_created()
        age = None if oldest is None else max(0.0, round(self.clock() - parse_iso(oldest), 3))
        return Stats(states, types, self.store.blocked_by_dependencies(), age)

    # -- dead letters ------------------------------------------------------------------

    def dlq_list(self) -> list[Any]:
        rows = self.store.page("dead-letter", None, 0, 10_000)
        return [wire_task(decode_task(r.doc), r.extra) for r in rows]

    def dlq_retry(self, task_id: str) -> Task:
        now = self.clock()
        with self.transaction():
            row = self._dead(task_id)
            task = decode_task(row.doc)
            if self.store.live_id_for_key(task.idempotency_key):
                raise Conflict(f"task {task_id}'s idempotency key is live again in another task")
            task.retries = 0
            task.available_at = None
            row.available_at = now
            row.rate_limits = 0
            self._save(row, task, "pending")
            self._unit.emit(ev.QueueRequeued(id=task_id, type=task.type))
        return task

    def dlq_delete(self, task_id: str) -> Task:
        with self.transaction():
            row = self._dead(task_id)
            task = decode_task(row.doc)
            self.store.delete(task_id)
            self._unit.count("dead-letter", row.type, -1)
            self._unit.touch("dead-letter")
            self._unit.emit(ev.QueueDeleted(id=task_id, type=task.type))
        return task

    def _dead(self, task_id: str) -> TaskRow:
        row = self._row(task_id)
        rules.check_dead(task_id, row.state)
        return row

    # -- import ------------------------------------------------------------------------

    def import_tasks(self, entries: list[Any], first: int = 0) -> tuple[int, int, list[str]]:
        """Tasks Loki Mode's tools wrote into pending.json; idempotent by id (`first` is the
        index of `entries[0]` in the file, for messages).

        Returns (imported, skipped, problems): an entry that cannot be a task is
        skipped and described, never half-imported. lokid's own entries (marked
        `managedBy: lokid`) and tasks deleted for good are never taken back.
        """
        if self.bulk:
            raise QueueBusy(f"the queue of {self.project} is taking a bulk enqueue; try again")
        now = self.clock()
        imported = skipped = 0
        problems: list[str] = []
        ids = [e["id"] for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]
        with self.transaction():
            known = self.store.states_of(ids)
            gone = self.store.deleted(ids)
            for index, entry in enumerate(entries, start=first):
                if not isinstance(entry, dict):
                    problems.append(f"entry {index} is not an object")
                    continue
                task_id = entry.get("id")
                seen = isinstance(task_id, str) and (task_id in known or task_id in gone)
                if entry.get("managedBy") == "lokid" or seen:
                    skipped += 1
                    continue
                try:
                    task, loki_priority = from_loki(entry, known)
                    prepared = self.prepare_one(task, f"entry {index}", loki_priority)
                    result = self._add_all([prepared], now)[0]  # refused before any write
                except (InvalidParams, Conflict, TooLarge) as exc:
                    problems.append(exc.message)
                    continue
                if result.duplicate:
                    skipped += 1
                else:
                    imported += 1
                    known[result.id] = "pending"
        return imported, skipped, problems

    def idle(self) -> bool:
        return self._unit.idle()
