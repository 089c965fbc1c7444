"""One project's task queue: the domain rules applied to the store, with events.

Every operation is one SQLite transaction on the trio thread (they take tens
of microseconds), so operations are atomic with respect to each other: two
agents can never hold the same task. Events are published only after the
transaction commits, and a reply is sent only after that, so whatever a
client was told has happened is on disk.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import msgspec

from lokid.breakers import BreakerConfigs, Breakers
from lokid.domain.queue import (
    decide_failure,
    idempotency_key,
    normalize_priority,
)
from lokid.errors import Conflict, InvalidParams, NotFound
from lokid.store.base import QueueStore, TaskRow
from lokid.wire.queue import (
    NEW_TASK_FIELDS,
    STATES,
    TASK_FIELDS,
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

Publish = Callable[[str, dict[str, Any]], None]
Changed = Callable[[Iterable[str]], None]

LIVE_STATES = frozenset({"pending", "in-progress", "completed"})  # where a key is taken

_encode = msgspec.json.Encoder().encode
_decode_task = msgspec.json.Decoder(Task).decode
# Keys of Loki Mode's own task files that describe state lokid owns; not kept as extras.
_OWNED_EXTRAS = frozenset({"status"})


def task_doc(task: Task) -> bytes:
    return _encode(task)


def wire_task(task: Task, extra: bytes | None) -> Any:
    """A task as clients see it: the Task, plus any extra fields Loki Mode's files gave it."""
    if not extra:
        return task
    return {**msgspec.json.decode(extra), **msgspec.to_builtins(task)}


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
        self._events: list[tuple[str, dict[str, Any]]] = []
        self._dirty: set[str] = set()
        # Leases and counts are kept here, not indexed in the database (each index costs
        # every claim a page). Changes wait in `_delta` until their transaction commits.
        self._leases: dict[str, float] = dict(store.leases())
        self._counts: Counter[tuple[str, str]] = Counter(
            {(state, task_type): n for state, task_type, n in store.counts()}
        )
        # Ids some task depends on: most completions release nobody and skip the update.
        # A superset is harmless (it only costs that update), so it never shrinks.
        self._depended_on: set[str] = store.depended_on()
        self._delta_counts: Counter[tuple[str, str]] = Counter()
        self._delta_leases: dict[str, float | None] = {}
        self.breakers = Breakers(store, self._emit, self._touch, breaker_config)
        self._publish = publish
        self._changed = changed
        self.clock = clock
        self.rng = rng or random.Random()
        self._lease_set = lease_set or (lambda until: None)

    # -- plumbing ----------------------------------------------------------------------

    def _emit(self, topic: str, data: dict[str, Any]) -> None:
        self._events.append((topic, data))

    def _touch(self, *states: str) -> None:
        self._dirty.update(states)

    def _commit_effects(self) -> None:
        """After a commit: apply the in-memory changes, tell subscribers and the view writer."""
        self.breakers.commit()
        self._counts.update(self._delta_counts)
        self._delta_counts.clear()
        soonest = None
        for task_id, until in self._delta_leases.items():
            if until is None:
                self._leases.pop(task_id, None)
            else:
                self._leases[task_id] = until
                soonest = until if soonest is None else min(soonest, until)
        self._delta_leases.clear()
        if soonest is not None:
            self._lease_set(soonest)
        events, self._events = self._events, []
        dirty, self._dirty = self._dirty, set()
        for topic, data in events:
            self._publish(topic, data)
        if dirty:
            self._changed(dirty)

    def transaction(self) -> _Transaction:
        """The store's transaction, with this queue's events and view updates after commit."""
        return _Transaction(self)

    def _row(self, task_id: str) -> TaskRow:
        row = self.store.get(task_id)
        if row is None:
            raise NotFound(f"no task {task_id!r} in {self.project}")
        return row

    def _rollback_effects(self) -> None:
        self.breakers.rollback()
        self._events.clear()
        self._dirty.clear()
        self._delta_counts.clear()
        self._delta_leases.clear()

    def _save(self, row: TaskRow, task: Task, state: str) -> None:
        """Store a task's new state, with everything that follows from the move."""
        self._touch(row.state, state)
        if row.state != state:
            self._delta_counts[(row.state, row.type)] -= 1
            self._delta_counts[(state, row.type)] += 1
            was_live, live = row.state in LIVE_STATES, state in LIVE_STATES
            if was_live and not live:
                self.store.release_key(task.idempotency_key, row.id)
            elif live and not was_live:
                self.store.hold_key(task.idempotency_key, row.id)
        self._delta_leases[row.id] = row.lease_until if state == "in-progress" else None
        row.state = state
        row.doc = task_doc(task)
        self.store.update(row)

    # -- enqueue -----------------------------------------------------------------------

    def enqueue(self, raw: dict[str, Any]) -> Enqueued:
        with self.transaction():
            return self._add(raw, self.clock(), "task")

    def enqueue_many(self, raws: list[dict[str, Any]]) -> list[Enqueued]:
        """All or nothing: one bad task rejects the batch, naming its index."""
        now = self.clock()
        with self.transaction():
            return [self._add(raw, now, f"tasks[{i}]") for i, raw in enumerate(raws)]

    def _add(self, raw: dict[str, Any], now: float, where: str) -> Enqueued:
        new, extras = _parse_new_task(raw, where)
        try:
            key = idempotency_key(new.payload)
        except ValueError as exc:
            raise InvalidParams(f"{where}: payload is not JSON: {exc}") from None
        key = new.idempotency_key or key
        existing = self.store.live_id_for_key(key)
        if existing is not None:
            return Enqueued(existing, True)
        task_id = new.id or str(uuid.uuid4())
        if self.store.get(task_id) is not None:
            raise Conflict(f"{where}: a task with id {task_id!r} already exists")
        deps = list(dict.fromkeys(new.dependencies))
        states = self.store.states_of(deps)
        missing = [d for d in deps if d not in states]
        if missing:
            raise InvalidParams(f"{where}: dependencies name unknown tasks: {', '.join(missing)}")
        task = Task(
            id=task_id,
            idempotency_key=key,
            type=new.type,
            priority=_priority(new.priority, where),
            dependencies=deps,
            payload=new.payload,
            created_at=iso(now),
            timeout=new.timeout,
            max_retries=new.max_retries,
            backoff_seconds=new.backoff_seconds,
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
            doc=task_doc(task),
            extra=_encode(extras) if extras else None,
        )
        self.store.insert(row, deps, key, task.created_at)
        self._depended_on.update(deps)
        self._delta_counts[("pending", task.type)] += 1
        self._touch("pending")
        self._emit("queue.enqueued", {"id": task_id, "type": task.type, "priority": task.priority})
        return Enqueued(task_id, False)

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
        task = _decode_task(best.doc)
        task.claimed_by = claim.agent
        task.claimed_at = iso(now)
        best.claimed_by = claim.agent
        best.lease_until = now + (claim.lease or task.timeout)
        best.probe = best_probe
        if best_probe:
            self.breakers.probe_claimed(task.type, now)
        self._save(best, task, "in-progress")
        self._emit("queue.claimed", {"id": task.id, "type": task.type, "agent": claim.agent})
        return ClaimResult(task=wire_task(task, best.extra))

    def heartbeat(self, task_id: str, agent: str, lease: float | None) -> float:
        now = self.clock()
        with self.transaction():
            row = self._held(task_id, agent)
            task = _decode_task(row.doc)
            row.lease_until = now + (lease or task.timeout)
            self.store.update(row)
            self._delta_leases[row.id] = row.lease_until
        return row.lease_until

    def _held(self, task_id: str, agent: str) -> TaskRow:
        row = self._row(task_id)
        if row.state != "in-progress":
            raise Conflict(f"task {task_id} is {row.state}, not in progress")
        if row.claimed_by != agent:
            raise Conflict(f"task {task_id} is held by {row.claimed_by!r}, not {agent!r}")
        return row

    def expire_leases(self) -> int:
        """Each lease that ran out is a failed attempt (`lease expired`)."""
        now = self.clock()
        due = sorted((until, task_id) for task_id, until in self._leases.items() if until <= now)
        with self.transaction():
            rows = [row for _, task_id in due if (row := self.store.get(task_id)) is not None]
            for row in rows:
                self._emit(
                    "queue.lease-expired",
                    {"id": row.id, "type": row.type, "agent": row.claimed_by},
                )
                self._fail_row(row, "lease expired", None, now)
        return len(rows)

    def next_lease_deadline(self) -> float | None:
        return min(self._leases.values(), default=None)

    # -- outcomes ----------------------------------------------------------------------

    def complete(
        self, task_id: str, agent: str, result: dict[str, Any], then: Claim | None = None
    ) -> TaskState:
        """Complete a held task; with `then`, claim the agent's next one in the same
        transaction (one commit and one round trip for a worker's whole cycle)."""
        if "decisionReport" not in result or result["decisionReport"] in (None, "", {}):
            raise InvalidParams("result.decisionReport is required; the task stays claimed")
        try:
            outcome = msgspec.convert(result, TaskResult)
        except msgspec.ValidationError as exc:
            raise InvalidParams(f"result: {exc}") from None
        now = self.clock()
        with self.transaction():
            row = self._held(task_id, agent)
            task = _decode_task(row.doc)
            task.completed_at = iso(now)
            task.result = outcome
            row.lease_until = None
            row.rate_limits = 0
            self.breakers.record_success(task.type, now, row.probe)
            row.probe = False
            self._save(row, task, "completed")
            if task_id in self._depended_on:
                self.store.release_dependents(task_id)
            self._emit("queue.completed", {"id": task_id, "type": task.type, "agent": agent})
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
        task = _decode_task(row.doc)
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
            self._emit(
                "queue.dead-lettered",
                {"id": task.id, "type": task.type, "retries": task.retries, "error": error},
            )
            return task
        row.available_at = now + outcome.delay
        task.available_at = iso(row.available_at)
        self._save(row, task, "pending")
        data = {"id": task.id, "type": task.type, "retries": task.retries}
        data |= {"availableAt": task.available_at, "error": error}
        if outcome.kind == "rate-limited":
            self._emit("queue.retrying", data | {"rateLimited": True})
            self._emit("queue.slowdown", {"type": task.type, "wait": outcome.delay / 2})
        else:
            self._emit("queue.retrying", data)
        return task

    def cancel(self, task_id: str, reason: str) -> list[str]:
        now = self.clock()
        with self.transaction():
            row = self._row(task_id)
            if row.state not in ("pending", "in-progress"):
                raise Conflict(f"task {task_id} is {row.state}; only pending or in-progress tasks")
            cancelled: list[str] = []
            self._cancel_tree(row, reason, now, cancelled)
        return cancelled

    def _cancel_tree(self, root: TaskRow, reason: str, now: float, out: list[str]) -> None:
        """Cancel `root` and, breadth first, every live task that depends on it."""
        todo = [(root, reason)]
        while todo:
            row, why = todo.pop(0)
            task = _decode_task(row.doc)
            task.cancelled_at = iso(now)
            task.cancel_reason = why
            if row.probe:
                self.breakers.probe_released(task.type)
            row.lease_until = None
            row.probe = False
            self._save(row, task, "cancelled")
            out.append(task.id)
            self._emit("queue.cancelled", {"id": task.id, "type": task.type, "reason": why})
            for child in self.store.dependents(task.id):
                if child.state in ("pending", "in-progress"):
                    todo.append((child, f"Parent {task.id} cancelled"))

    # -- reading -----------------------------------------------------------------------

    def get(self, task_id: str) -> TaskState:
        row = self._row(task_id)
        return TaskState(wire_task(_decode_task(row.doc), row.extra), row.state)  # type: ignore[arg-type]

    def page(self, state: str | None, task_type: str | None, limit: int, cursor: str | None):
        try:
            after = int(cursor) if cursor else 0
        except ValueError:
            raise InvalidParams(f"cursor {cursor!r} is not one this daemon gave out") from None
        rows = self.store.page(state, task_type, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = str(rows[-1].seq) if more and rows else None
        return [wire_task(_decode_task(r.doc), r.extra) for r in rows], next_cursor

    def stats(self) -> Stats:
        states = dict.fromkeys(STATES, 0)
        types: dict[str, dict[str, int]] = {}
        for (state, task_type), count in sorted(self._counts.items()):
            if count:
                states[state] += count
                types.setdefault(task_type, {})[state] = count
        oldest = self.store.oldest_pending_created()
        age = None if oldest is None else max(0.0, round(self.clock() - parse_iso(oldest), 3))
        return Stats(states, types, self.store.blocked_by_dependencies(), age)

    # -- dead letters ------------------------------------------------------------------

    def dlq_list(self) -> list[Any]:
        rows = self.store.page("dead-letter", None, 0, 10_000)
        return [wire_task(_decode_task(r.doc), r.extra) for r in rows]

    def dlq_retry(self, task_id: str) -> Task:
        now = self.clock()
        with self.transaction():
            row = self._dead(task_id)
            if self.store.live_id_for_key(_decode_task(row.doc).idempotency_key):
                raise Conflict(f"task {task_id}'s idempotency key is live again in another task")
            task = _decode_task(row.doc)
            task.retries = 0
            task.available_at = None
            row.available_at = now
            row.rate_limits = 0
            self._save(row, task, "pending")
            self._emit("queue.requeued", {"id": task_id, "type": task.type})
        return task

    def dlq_delete(self, task_id: str) -> Task:
        with self.transaction():
            row = self._dead(task_id)
            task = _decode_task(row.doc)
            self.store.delete(task_id)
            self._delta_counts[("dead-letter", row.type)] -= 1
            self._touch("dead-letter")
            self._emit("queue.deleted", {"id": task_id, "type": task.type})
        return task

    def _dead(self, task_id: str) -> TaskRow:
        row = self._row(task_id)
        if row.state != "dead-letter":
            raise Conflict(f"task {task_id} is {row.state}, not in the dead-letter queue")
        return row

    # -- import ------------------------------------------------------------------------

    def import_tasks(self, entries: list[Any]) -> tuple[int, int, list[str]]:
        """Tasks Loki Mode's tools wrote into pending.json; idempotent by id.

        Returns (imported, skipped, problems): an entry that cannot be a task is
        skipped and described, never half-imported.
        """
        now = self.clock()
        imported = skipped = 0
        problems: list[str] = []
        ids = [e["id"] for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]
        with self.transaction():
            known = self.store.states_of(ids)
            for index, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    problems.append(f"entry {index} is not an object")
                    continue
                if isinstance(entry.get("id"), str) and entry["id"] in known:
                    skipped += 1
                    continue
                try:
                    result = self._add(_from_loki(entry, known), now, f"entry {index}")
                except (InvalidParams, Conflict) as exc:
                    problems.append(exc.message)
                    continue
                if result.duplicate:
                    skipped += 1
                else:
                    imported += 1
                    known[result.id] = "pending"
        return imported, skipped, problems

    def idle(self) -> bool:
        return not self._leases


class Claim(NamedTuple):
    agent: str
    capabilities: list[str]
    lease: float | None = None


class _Transaction:
    """The store's transaction, then the queue's events and view updates once it committed."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self._cm = queue.store.transaction()

    def __enter__(self) -> None:
        self._cm.__enter__()
        self._queue.breakers.begin()

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._cm.__exit__(*exc_info)
        except BaseException:
            self._queue._rollback_effects()
            raise
        if exc_info[0] is None:
            self._queue._commit_effects()
        else:
            self._queue._rollback_effects()


def _priority(value: int | str, where: str) -> int:
    try:
        return normalize_priority(value)
    except ValueError as exc:
        raise InvalidParams(f"{where}: {exc}") from None


def _parse_new_task(raw: dict[str, Any], where: str) -> tuple[NewTask, dict[str, Any]]:
    try:
        new = msgspec.convert(raw, NewTask)
    except msgspec.ValidationError as exc:
        raise InvalidParams(f"{where}: {exc}") from None
    extras = {
        k: v
        for k, v in raw.items()
        if k not in NEW_TASK_FIELDS and k not in TASK_FIELDS and k not in _OWNED_EXTRAS
    }
    return new, extras


def _from_loki(entry: dict[str, Any], known: dict[str, str]) -> dict[str, Any]:
    """A task as Loki Mode's tools write it, made acceptable to `_add`.

    Missing type becomes `general`; string priorities are mapped; dependencies on
    tasks lokid has never seen are dropped (an import must not lose the task).
    """
    task = dict(entry)
    with contextlib.suppress(ValueError):  # a bad one is left for `_add` to report
        task["priority"] = normalize_priority(entry.get("priority"))
    task.setdefault("type", "general")
    if not isinstance(task.get("type"), str) or not task["type"]:
        task["type"] = "general"
    if not isinstance(task.get("payload"), dict):
        task["payload"] = {k: v for k, v in entry.items() if k in ("title", "description")}
    deps = task.get("dependencies")
    task["dependencies"] = [d for d in deps if d in known] if isinstance(deps, list) else []
    if not isinstance(task.get("idempotencyKey"), str) and isinstance(entry.get("id"), str):
        # The id is what makes an import idempotent; two Loki tasks with equal
        # payloads but different ids are different tasks.
        task["idempotencyKey"] = idempotency_key({"id": entry["id"], **task["payload"]})
    return task
