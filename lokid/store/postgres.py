"""One project's queue in a PostgreSQL database that other projects and other lokid
instances share (the `QueueStore` interface, as `SqliteStore` implements it).

Rows are SQLite's, with the project's number in front. What changes is that other writers
exist, so every read inside a transaction that a decision rests on takes the row's lock:

- a claim is one statement, `... ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP
  LOCKED`: two claimers never take one task and never wait for each other;
- `get` in a transaction is `FOR UPDATE` (the holder completing and a sweeper expiring the
  same task are serialised, and the loser sees the winner's state), `states_of` is `FOR
  SHARE` (a dependency cannot complete or be cancelled between being read and its
  dependent being stored);
- an idempotency key is looked up under a transaction-level advisory lock on the key, so
  two instances enqueuing the same payload at once make one task.

Every library error leaves as `StoreUnavailable` naming the server (see pg_database.py).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from lokid.domain.queue import CLAIM_ORDER_SQL, PRIORITY_NAME_SQL
from lokid.errors import Conflict
from lokid.store.base import BreakerRow, NewRow, TaskRow
from lokid.store.pg_database import RETRYABLE, Database

_COLUMNS = (
    "seq, id, state, type, priority, available_at, deps_left, lease_until, claimed_by, "
    "rate_limits, probe, doc, extra"
)
_BREAKER_COLUMNS = "type, state, failures, last_failure, opened_at, half_open_at, forced, reason"
_READY = "project = %s AND state = 'pending' AND deps_left = 0"
# An agent of one type reads its type's ready tasks straight off the claim index; one of
# several types takes each type's first unlocked head (LATERAL), then the best of those.
_CLAIM_ONE = (
    f"SELECT {_COLUMNS} FROM lokid.tasks WHERE {_READY} AND type = %s AND available_at <= %s "
    f"ORDER BY {CLAIM_ORDER_SQL} LIMIT 1 FOR UPDATE SKIP LOCKED"
)
_CLAIM_MANY = (
    f"SELECT h.* FROM unnest(%s::text[]) AS c(type) CROSS JOIN LATERAL ("
    f" SELECT {_COLUMNS} FROM lokid.tasks t WHERE t.{_READY.replace(' AND ', ' AND t.')}"
    f" AND t.type = c.type AND t.available_at <= %s"
    f" ORDER BY t.priority DESC, t.seq LIMIT 1 FOR UPDATE SKIP LOCKED) h "
    f"ORDER BY h.{CLAIM_ORDER_SQL.replace(', ', ', h.')} LIMIT 1"
)


_TASK_FIELDS = _COLUMNS.split(", ")
_GET_WITH_BREAKER = (
    f"SELECT {', '.join('t.' + c for c in _TASK_FIELDS)}, "
    f"{', '.join('b.' + c for c in _BREAKER_COLUMNS.split(', '))} "
    "FROM lokid.tasks t LEFT JOIN lokid.breakers b ON b.project = t.project AND b.type = t.type "
    "WHERE t.project = %s AND t.id = %s FOR UPDATE OF t"
)


def _row(r: tuple) -> TaskRow:
    return TaskRow(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], bool(r[10]),
        bytes(r[11]), None if r[12] is None else bytes(r[12]),
    )  # fmt: skip


def _breaker(r: tuple) -> BreakerRow:
    return BreakerRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7])


@functools.cache
def _key_lock(project: int, key: str) -> int:
    """The advisory lock of one project's idempotency key (64 bits of its hash)."""
    digest = hashlib.blake2b(f"{project}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def channel_of(name: str) -> str:
    """The LISTEN/NOTIFY channel of a project (a short identifier whatever its name)."""
    return "lokid_" + hashlib.blake2b(name.encode(), digest_size=12).hexdigest()


class PostgresStore:
    """One project (by name) in a `Database`."""

    shared = True  # other lokid instances may write it too (see lokid/queue/shared.py)
    broken: str | None = None  # (a server away is `unavailable` per call, never for good)

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = name
        self.channel = channel_of(name)
        self.path = f"{db.where} (project {name})"
        self._conn: psycopg.Connection | None = None
        self._depth = 0
        # Breakers read along with a task in this transaction (type -> row, None: no row).
        self._breaker_seen: dict[str, BreakerRow | None] = {}
        # Called just before COMMIT; returns the NOTIFY payloads the transaction sends.
        self.outgoing: Callable[[], list[str]] | None = None
        with db.connection() as conn:
            conn.execute(
                "INSERT INTO lokid.projects (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                (name,),
            )
            (self.project,) = conn.execute(
                "SELECT id FROM lokid.projects WHERE name = %s", (name,)
            ).fetchone()

    @property
    def clock(self) -> Callable[[], float]:
        return self.db.clock

    # -- transactions --------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT on one pooled connection; nested uses join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with self.db.connection() as conn:
            self._conn, self._depth = conn, 1
            self._breaker_seen.clear()
            try:
                conn.execute("BEGIN")
                yield
                conn.execute(self._commit_sql(conn))
            except BaseException:
                if not conn.closed:
                    try:
                        conn.execute("ROLLBACK")
                    except psycopg.Error:
                        conn.close()  # the pool drops it
                raise
            finally:
                self._conn, self._depth = None, 0

    def _commit_sql(self, conn: psycopg.Connection) -> bytes:
        """COMMIT, after the transaction's NOTIFYs in the same round trip (one simple-query
        string; the payloads quoted as literals by psycopg, never spliced raw)."""
        payloads = self.outgoing() if self.outgoing is not None else []
        if not payloads:
            return b"COMMIT"
        channel = sql.Identifier(self.channel)
        notifies = [sql.SQL("NOTIFY {}, {}").format(channel, sql.Literal(p)) for p in payloads]
        return sql.SQL("; ").join([*notifies, sql.SQL("COMMIT")]).as_bytes(conn)

    @contextmanager
    def _use(self) -> Iterator[psycopg.Connection]:
        if self._conn is not None:
            try:
                yield self._conn
            except RETRYABLE as exc:
                raise self.db.unavailable(exc) from exc
        else:
            with self.db.connection() as conn:
                yield conn

    def _all(self, sql: str, params: tuple | list) -> list[tuple]:
        with self._use() as conn:
            return conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: tuple | list) -> tuple | None:
        with self._use() as conn:
            return conn.execute(sql, params).fetchone()

    def _run(self, sql: str, params: tuple | list) -> None:
        with self._use() as conn:
            conn.execute(sql, params)

    @property
    def _locking(self) -> str:
        """Reads a decision rests on lock their rows, inside a transaction."""
        return " FOR UPDATE" if self._conn is not None else ""

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction (SAVEPOINT) inside the open one."""
        with self._use() as conn, conn.transaction():
            yield

    def checkpoint(self) -> None:
        """Nothing to do: the server keeps its own journal."""

    def close(self) -> None:
        """The pool belongs to the `Database` (other projects use it)."""

    def view_reader(self) -> PostgresViewReader:
        return PostgresViewReader(self.db, self.project)

    # -- tasks ---------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskRow | None:
        if self._conn is None:
            r = self._one(
                f"SELECT {_COLUMNS} FROM lokid.tasks WHERE project = %s AND id = %s",
                (self.project, task_id),
            )
            return None if r is None else _row(r)
        # In a transaction the task is about to change, and its breaker is read next: both
        # in one round trip (the breaker unlocked, as `breakers_of` would read it).
        r = self._one(_GET_WITH_BREAKER, (self.project, task_id))
        if r is None:
            return None
        breaker = r[len(_TASK_FIELDS) :]
        self._breaker_seen[r[3]] = None if breaker[0] is None else _breaker(breaker)
        return _row(r)

    def states_of(self, ids: Iterable[str]) -> dict[str, str]:
        ids = list(ids)
        if not ids:
            return {}
        share = " FOR SHARE" if self._conn is not None else ""
        rows = self._all(
            f"SELECT id, state FROM lokid.tasks WHERE project = %s AND id = ANY(%s){share}",
            (self.project, ids),
        )
        return dict(rows)

    def live_id_for_key(self, key: str) -> str | None:
        if self._conn is not None:  # held until commit: a second enqueue of `key` waits
            self._run("SELECT pg_advisory_xact_lock(%s)", (_key_lock(self.project, key),))
        r = self._one(
            "SELECT task_id FROM lokid.live_keys WHERE project = %s AND idem = %s",
            (self.project, key),
        )
        return None if r is None else r[0]

    def hold_key(self, key: str, task_id: str) -> None:
        self._run(
            "INSERT INTO lokid.live_keys (project, idem, task_id) VALUES (%s, %s, %s) "
            "ON CONFLICT (project, idem) DO UPDATE SET task_id = EXCLUDED.task_id",
            (self.project, key, task_id),
        )

    def release_key(self, key: str, task_id: str) -> None:
        self._run(
            "DELETE FROM lokid.live_keys WHERE project = %s AND idem = %s AND task_id = %s",
            (self.project, key, task_id),
        )

    def insert(
        self,
        row: TaskRow,
        dependencies: list[str],
        idem: str,
        created: str,
        loki_priority: str | None = None,
    ) -> int:
        r = self._one(
            "INSERT INTO lokid.tasks (project, id, state, type, priority, idem, available_at, "
            "deps_left, lease_until, claimed_by, rate_limits, probe, created, doc, extra, "
            "loki_priority) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (project, id) DO NOTHING RETURNING seq",
            (
                self.project, row.id, row.state, row.type, row.priority, idem,
                row.available_at, row.deps_left, row.lease_until, row.claimed_by,
                row.rate_limits, row.probe, created, row.doc, row.extra, loki_priority,
            ),
        )  # fmt: skip
        if r is None:  # another instance stored this id since we looked
            raise Conflict(f"a task with id {row.id!r} already exists")
        if dependencies:
            with self._use() as conn:
                conn.cursor().executemany(
                    "INSERT INTO lokid.deps (project, task_id, dep_id) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    [(self.project, row.id, dep) for dep in dependencies],
                )
        self.hold_key(idem, row.id)
        return r[0]

    def live_ids_for_keys(self, keys: Iterable[str]) -> dict[str, str]:
        """Each key under its advisory lock (`live_id_for_key`), as enqueues one by one."""
        found = ((key, self.live_id_for_key(key)) for key in keys)
        return {key: task_id for key, task_id in found if task_id is not None}

    def insert_many(self, rows: list[NewRow]) -> None:
        for row, deps, idem, created, loki_priority in rows:
            self.insert(row, deps, idem, created, loki_priority)

    def update(self, row: TaskRow) -> None:
        self._run(
            "UPDATE lokid.tasks SET state = %s, available_at = %s, deps_left = %s, "
            "lease_until = %s, claimed_by = %s, rate_limits = %s, probe = %s, doc = %s "
            "WHERE seq = %s",
            (
                row.state, row.available_at, row.deps_left, row.lease_until, row.claimed_by,
                row.rate_limits, row.probe, row.doc, row.seq,
            ),
        )  # fmt: skip

    def delete(self, task_id: str) -> None:
        """Gone for good, and remembered as gone (a tombstone)."""
        self._run("DELETE FROM lokid.tasks WHERE project = %s AND id = %s", (self.project, task_id))
        self._run(
            "DELETE FROM lokid.deps WHERE project = %s AND task_id = %s", (self.project, task_id)
        )
        self._run(
            "INSERT INTO lokid.tombstones (project, id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (self.project, task_id),
        )

    def deleted(self, ids: Iterable[str]) -> set[str]:
        """Which of `ids` were tasks deleted for good."""
        rows = self._all(
            "SELECT id FROM lokid.tombstones WHERE project = %s AND id = ANY(%s)",
            (self.project, list(ids)),
        )
        return {r[0] for r in rows}

    def next_candidate(self, task_types: list[str], now: float) -> TaskRow | None:
        """The claim: the best ready task of these types that nobody else is claiming,
        locked until this transaction ends."""
        if len(task_types) == 1:
            r = self._one(_CLAIM_ONE, (self.project, task_types[0], now))
        else:
            r = self._one(_CLAIM_MANY, (task_types, self.project, now))
        return None if r is None else _row(r)

    def dependents(self, task_id: str) -> list[TaskRow]:
        rows = self._all(
            f"SELECT {_COLUMNS} FROM lokid.tasks WHERE project = %s AND id IN "
            "(SELECT task_id FROM lokid.deps WHERE project = %s AND dep_id = %s) "
            f"ORDER BY seq{self._locking}",
            (self.project, self.project, task_id),
        )
        return [_row(r) for r in rows]

    def release_dependents(self, task_id: str) -> None:
        self._run(
            "UPDATE lokid.tasks SET deps_left = deps_left - 1 WHERE project = %s AND id IN "
            "(SELECT task_id FROM lokid.deps WHERE project = %s AND dep_id = %s) "
            "AND deps_left > 0",
            (self.project, self.project, task_id),
        )

    def depended_on(self) -> set[str]:
        rows = self._all(
            "SELECT DISTINCT dep_id FROM lokid.deps WHERE project = %s", (self.project,)
        )
        return {r[0] for r in rows}

    def leases(self) -> list[tuple[str, float]]:
        return [
            (r[0], r[1])
            for r in self._all(
                "SELECT id, lease_until FROM lokid.tasks "
                "WHERE project = %s AND state = 'in-progress'",
                (self.project,),
            )
        ]

    def due_leases(self, now: float) -> list[TaskRow]:
        """In-progress tasks whose lease ended, locked, skipping those another transaction
        holds (its holder completing it, or another instance expiring it right now).
        Ordered by type, so two sweepers take the breakers' rows in the same order."""
        rows = self._all(
            f"SELECT {_COLUMNS} FROM lokid.tasks WHERE project = %s AND state = 'in-progress' "
            "AND lease_until <= %s ORDER BY type, lease_until FOR UPDATE SKIP LOCKED",
            (self.project, now),
        )
        return [_row(r) for r in rows]

    def next_lease(self) -> float | None:
        r = self._one(
            "SELECT min(lease_until) FROM lokid.tasks WHERE project = %s AND state = 'in-progress'",
            (self.project,),
        )
        return None if r is None else r[0]

    def page(self, state: str | None, task_type: str | None, after: int, limit: int):
        where, args = ["project = %s", "seq > %s"], [self.project, after]
        if state is not None:
            where.append("state = %s")
            args.append(state)
        if task_type is not None:
            where.append("type = %s")
            args.append(task_type)
        rows = self._all(
            f"SELECT {_COLUMNS} FROM lokid.tasks WHERE {' AND '.join(where)} ORDER BY seq LIMIT %s",
            (*args, limit),
        )
        return [_row(r) for r in rows]

    def counts(self) -> list[tuple[str, str, int]]:
        return self._all(
            "SELECT state, type, count(*) FROM lokid.tasks WHERE project = %s GROUP BY state, type",
            (self.project,),
        )

    def blocked_by_dependencies(self) -> int:
        r = self._one(
            "SELECT count(*) FROM lokid.tasks WHERE project = %s AND state = 'pending' "
            "AND deps_left > 0",
            (self.project,),
        )
        return 0 if r is None else r[0]

    def oldest_pending_created(self) -> str | None:
        r = self._one(
            "SELECT created FROM lokid.tasks WHERE project = %s AND state = 'pending' "
            "ORDER BY seq LIMIT 1",
            (self.project,),
        )
        return None if r is None else r[0]

    # -- breakers ------------------------------------------------------------------------

    def probes_in_flight(self) -> list[tuple[str, int]]:
        return self._all(
            "SELECT type, count(*) FROM lokid.tasks WHERE project = %s "
            "AND state = 'in-progress' AND probe GROUP BY type",
            (self.project,),
        )

    def probes(self, task_type: str) -> int:
        r = self._one(
            "SELECT count(*) FROM lokid.tasks WHERE project = %s AND type = %s "
            "AND state = 'in-progress' AND probe",
            (self.project, task_type),
        )
        return 0 if r is None else r[0]

    def breakers(self) -> list[BreakerRow]:
        rows = self._all(
            f"SELECT {_BREAKER_COLUMNS} FROM lokid.breakers WHERE project = %s",
            (self.project,),
        )
        return [_breaker(r) for r in rows]

    def breakers_of(self, types: list[str]) -> list[BreakerRow]:
        """These types' breakers as committed (unlocked). In a transaction, the first call
        reads all of the project's (a row per task type: few), so that a claim for several
        types costs one round trip, not one per type."""
        if self._conn is None:
            rows = self._all(
                f"SELECT {_BREAKER_COLUMNS} FROM lokid.breakers WHERE project = %s "
                "AND type = ANY(%s)",
                (self.project, types),
            )
            return [_breaker(r) for r in rows]
        if not all(t in self._breaker_seen for t in types):
            rows = self._all(
                f"SELECT {_BREAKER_COLUMNS} FROM lokid.breakers WHERE project = %s",
                (self.project,),
            )
            seen = {r[0]: _breaker(r) for r in rows}
            for t in types:
                self._breaker_seen.setdefault(t, seen.get(t))
            for t, row in seen.items():
                self._breaker_seen.setdefault(t, row)
        return [b for t in types if (b := self._breaker_seen[t]) is not None]

    def lock_breaker(self, task_type: str, wait: bool) -> BreakerRow | bool | None:
        """The breaker's row, locked for this transaction; False when `wait` is off and
        another transaction holds it (None: no row yet)."""
        if not wait:
            r = self._one(
                f"SELECT {_BREAKER_COLUMNS} FROM lokid.breakers WHERE project = %s "
                "AND type = %s FOR UPDATE SKIP LOCKED",
                (self.project, task_type),
            )
            if r is not None:
                return _breaker(r)
            exists = self._one(
                "SELECT 1 FROM lokid.breakers WHERE project = %s AND type = %s",
                (self.project, task_type),
            )
            return None if exists is None else False
        # A breaker never seen has no row to lock: make one (closed) first, so that two
        # instances recording its first failures take turns on it. One statement either
        # way: the upsert locks the row it returns.
        r = self._one(
            "INSERT INTO lokid.breakers (project, type, state, failures) "
            "VALUES (%s, %s, 'closed', 0) ON CONFLICT (project, type) "
            f"DO UPDATE SET type = EXCLUDED.type RETURNING {_BREAKER_COLUMNS}",
            (self.project, task_type),
        )
        return None if r is None else _breaker(r)

    def save_breaker(self, row: BreakerRow) -> None:
        self._run(
            "INSERT INTO lokid.breakers (project, type, state, failures, last_failure, "
            "opened_at, half_open_at, forced, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (project, type) DO UPDATE SET state = EXCLUDED.state, "
            "failures = EXCLUDED.failures, last_failure = EXCLUDED.last_failure, "
            "opened_at = EXCLUDED.opened_at, half_open_at = EXCLUDED.half_open_at, "
            "forced = EXCLUDED.forced, reason = EXCLUDED.reason",
            (
                self.project, row.type, row.state, row.failures, row.last_failure,
                row.opened_at, row.half_open_at, row.forced, row.reason,
            ),
        )  # fmt: skip


# A view entry in Loki Mode's words (as the SQLite store makes it: files/queue_files.py).
_VIEW_ITEM = (
    "convert_to(("
    "convert_from(doc, 'UTF8')::jsonb || coalesce(convert_from(extra, 'UTF8')::jsonb, '{}')"
    " || jsonb_build_object('status', %s::text, 'priority',"
    f" coalesce(loki_priority, {PRIORITY_NAME_SQL}), 'lokidPriority', priority,"
    " 'managedBy', 'lokid'))::text, 'UTF8')"
)


class PostgresViewReader:
    """Reads one state's tasks as lokid's block of its view file (in a worker thread, on a
    pooled connection of its own for each read)."""

    def __init__(self, db: Database, project: int) -> None:
        self._db = db
        self._project = project

    def read(self, state: str, status: str, newest: int | None = None) -> bytes:
        """JSON objects separated by commas, oldest first; the server builds the text."""
        limit = "" if newest is None else f"ORDER BY seq DESC LIMIT {int(newest)}"
        query = (
            "SELECT coalesce(string_agg(item, ','::bytea ORDER BY seq), ''::bytea) FROM ("
            f"  SELECT seq, {_VIEW_ITEM} AS item FROM ("
            "    SELECT seq, doc, extra, priority, loki_priority FROM lokid.tasks"
            f"    WHERE project = %s AND state = %s {limit}) newest) items"
        )
        with self._db.connection() as conn:
            (data,) = conn.execute(query, (status, self._project, state)).fetchone()
        return bytes(data)

    def known(self, ids: list[str]) -> set[str]:
        """Which of `ids` are lokid's tasks, or were (deleted for good)."""
        with self._db.connection() as conn:
            rows = conn.execute(
                "SELECT id FROM lokid.tasks WHERE project = %s AND id = ANY(%s) "
                "UNION SELECT id FROM lokid.tombstones WHERE project = %s AND id = ANY(%s)",
                (self._project, ids, self._project, ids),
            ).fetchall()
        return {r[0] for r in rows}

    def close(self) -> None:
        pass
