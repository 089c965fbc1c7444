"""The interface between the queue's logic and whatever keeps its state."""

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class TaskRow:
    """One task as stored: the indexed columns beside the JSON document."""

    seq: int
    id: str
    state: str
    type: str
    priority: int
    available_at: float
    deps_left: int
    lease_until: float | None
    claimed_by: str | None
    rate_limits: int
    probe: bool
    doc: bytes
    extra: bytes | None


@dataclass(slots=True)
class BreakerRow:
    type: str
    state: str
    failures: int
    last_failure: float | None
    opened_at: float | None
    half_open_at: float | None
    forced: bool
    reason: str | None


# A task to insert: its row, dependencies, idempotency key, creation time, and a story's
# priority as Loki Mode wrote it (or None).
NewRow = tuple[TaskRow, list[str], str, str, str | None]


class ViewReader(Protocol):
    """What the view writer reads, in its own thread, apart from the writer's connection."""

    def read(self, state: str, status: str, newest: int | None = None) -> bytes:
        """One state's tasks as lokid's block of its view file: JSON objects separated by
        commas, oldest first (the newest N, when given), each with its extra fields,
        `status` set to `status`, `priority` as a name, `lokidPriority` and `managedBy`."""

    def known(self, ids: list[str]) -> set[str]:
        """Which of `ids` are (or were, before a delete) lokid's tasks."""

    def close(self) -> None: ...


class QueueStore(Protocol):
    """What the queue needs from durable storage; `SqliteStore` is one implementation.

    Every method runs inside `transaction()` when it writes; a reply is sent only after
    the outermost transaction committed.
    """

    def transaction(self) -> AbstractContextManager[None]: ...
    def savepoint(self) -> AbstractContextManager[None]:
        """A nested transaction inside the open one (group commit: one per operation).

        On leaving it normally its changes stay in the open transaction, still to be
        committed with it; on an exception only what was done inside it is undone (SQL's
        SAVEPOINT, ROLLBACK TO, RELEASE) and the exception propagates, while the open
        transaction and everything done before the savepoint stay as they were. Only
        valid inside `transaction()`.
        """

    def close(self) -> None: ...
    def checkpoint(self) -> None:
        """Housekeeping of the store's journal that must not run on the event loop (SQLite:
        copy the WAL into the database); called from a worker thread after many commits.
        A store without such work does nothing."""

    def view_reader(self) -> ViewReader:
        """A reader for the view writer's thread, apart from the writer's connection."""

    # tasks
    def get(self, task_id: str) -> TaskRow | None: ...
    def states_of(self, ids: Iterable[str]) -> dict[str, str]: ...
    def live_id_for_key(self, key: str) -> str | None: ...
    def live_ids_for_keys(self, keys: Iterable[str]) -> dict[str, str]:
        """key -> task id, for the keys that are live (one round trip for a batch)."""

    def insert_many(self, rows: list[NewRow]) -> None:
        """`insert` for each (row, dependencies, idem, created, loki_priority), in order,
        as one write."""

    def hold_key(self, key: str, task_id: str) -> None: ...
    def release_key(self, key: str, task_id: str) -> None: ...
    def insert(
        self,
        row: TaskRow,
        dependencies: list[str],
        idem: str,
        created: str,
        loki_priority: str | None = None,
    ) -> int:
        """A new task; `loki_priority` is a story's priority as Loki Mode wrote it."""

    def update(self, row: TaskRow) -> None: ...
    def delete(self, task_id: str) -> None:
        """Gone for good; the id is remembered (`deleted`) so no old file brings it back."""

    def deleted(self, ids: Iterable[str]) -> set[str]: ...
    def next_candidate(self, task_types: list[str], now: float) -> TaskRow | None:
        """The task a claim takes among these types: eligible, highest priority, oldest."""

    def dependents(self, task_id: str) -> list[TaskRow]: ...
    def release_dependents(self, task_id: str) -> None: ...
    def leases(self) -> list[tuple[str, float]]: ...
    def depended_on(self) -> set[str]: ...
    def page(
        self, state: str | None, task_type: str | None, after: int, limit: int
    ) -> list[TaskRow]: ...
    def counts(self) -> list[tuple[str, str, int]]: ...
    def blocked_by_dependencies(self) -> int: ...
    def oldest_pending_created(self) -> str | None: ...

    # breakers
    def breakers(self) -> list[BreakerRow]: ...
    def save_breaker(self, row: BreakerRow) -> None: ...
    def probes_in_flight(self) -> list[tuple[str, int]]: ...
