"""The queue in an embedded SQLite database (WAL, one writer: this process).

Tasks are rows: the columns the queue searches by (state, type, priority,
availability, unmet dependencies, lease) beside the task's JSON document,
so a claim is one indexed lookup whatever the queue's length, and the JSON
views are written from the stored documents without re-encoding.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from lokid.domain.queue import CLAIM_ORDER_SQL, claim_key
from lokid.errors import StoreUnavailable
from lokid.store.base import BreakerRow, TaskRow

SCHEMA_VERSION = 1
WAL_BACKSTOP_PAGES = 65536

# Every index costs each claim and completion one more B-tree page in the commit, so
# the tasks table keeps only the claim index and the small blocked-task index. Leases
# and per-state counts live in the queue's memory (rebuilt from one scan at open), and
# idempotency keys in their own table, touched only when a task enters or leaves the
# states where its key is live.
_SCHEMA = """
CREATE TABLE tasks (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    state        TEXT NOT NULL,
    type         TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    idem         TEXT NOT NULL,
    available_at REAL NOT NULL,
    deps_left    INTEGER NOT NULL,
    lease_until  REAL,
    claimed_by   TEXT,
    rate_limits  INTEGER NOT NULL DEFAULT 0,
    probe        INTEGER NOT NULL DEFAULT 0,
    created      TEXT NOT NULL,
    doc          BLOB NOT NULL,
    extra        BLOB
);
CREATE INDEX tasks_ready ON tasks(type, priority DESC, seq)
    WHERE state = 'pending' AND deps_left = 0;
CREATE INDEX tasks_blocked ON tasks(seq) WHERE state = 'pending' AND deps_left > 0;

-- A key is live while its task is pending, in progress or completed; a dead-lettered
-- or cancelled task does not block its key from coming back.
CREATE TABLE live_keys (
    idem    TEXT PRIMARY KEY,
    task_id TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE deps (
    task_id TEXT NOT NULL,
    dep_id  TEXT NOT NULL,
    PRIMARY KEY (task_id, dep_id)
) WITHOUT ROWID;
CREATE INDEX deps_by_dep ON deps(dep_id);

CREATE TABLE breakers (
    type         TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    failures     INTEGER NOT NULL,
    last_failure REAL,
    opened_at    REAL,
    half_open_at REAL,
    forced       INTEGER NOT NULL DEFAULT 0,
    reason       TEXT
);
"""

_COLUMNS = (
    "seq, id, state, type, priority, available_at, deps_left, lease_until, claimed_by, "
    "rate_limits, probe, doc, extra"
)


_TYPE_HEAD = (
    "(SELECT seq FROM tasks INDEXED BY tasks_ready "
    "WHERE state = 'pending' AND deps_left = 0 AND type = ? AND available_at <= ? "
    f"ORDER BY {CLAIM_ORDER_SQL} LIMIT 1)"
)
_TYPES_PER_CLAIM_QUERY = 50


@functools.cache
def _claim_sql(n_types: int) -> str:
    """The claim statement for `n_types` types (at most _TYPES_PER_CLAIM_QUERY, so few)."""
    heads = ", ".join([_TYPE_HEAD] * n_types)
    order = f"ORDER BY {CLAIM_ORDER_SQL} LIMIT 1"
    return f"SELECT {_COLUMNS} FROM tasks WHERE seq IN ({heads}) {order}"


def _row(r: tuple) -> TaskRow:
    return TaskRow(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], bool(r[10]), r[11], r[12]
    )


def _uri(path: Path, *options: str) -> str:
    """The database's URI with SQLite's `unix-excl` VFS.

    unix-excl holds one exclusive lock on the file for as long as the database is open
    (other processes cannot open it: lokid is the only writer, and a second daemon on
    the same project is refused instead of racing it) and keeps the WAL index in this
    process's memory. Connections inside this process still share it, so the views'
    reader works as before, but a transaction no longer takes and drops six POSIX
    locks: measured, a one-row transaction costs 7.7 us instead of 12.2.
    """
    return "file:" + quote(str(path)) + "?" + "&".join(("vfs=unix-excl", *options))


class SqliteStore:
    """One database file per project, `.loki/state/lokid.db`."""

    def __init__(self, path: Path, durability: str = "normal") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(
            _uri(path), uri=True, isolation_level=None, check_same_thread=False, timeout=0
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")  # the first statement takes the lock
        except sqlite3.OperationalError as exc:
            self._db.close()
            if exc.sqlite_errorname != "SQLITE_BUSY":
                raise
            raise StoreUnavailable(
                f"{path} is open in another process (another lokid serving this project?)",
                {"sqlite": exc.sqlite_errorname},
            ) from exc
        # normal: a commit survives a crash of this process (the WAL is in the OS's hands);
        # full: it also survives an OS crash or power loss (fsync on every commit).
        self._db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        self._db.execute("PRAGMA foreign_keys=OFF")
        self._db.execute("PRAGMA busy_timeout=5000")
        # (SQLite's default page cache, 2 MiB: measured, a 32 MiB one made each worker cycle
        # ~35 us slower although it saved ~7 preads; mmap is out, as a file truncated under
        # lokid, say by a `cp` over it, would be a SIGBUS.)
        # Savepoints (one per operation of a group commit) keep what they may have to undo
        # in a sub-journal: in memory, not in a temporary file.
        self._db.execute("PRAGMA temp_store=MEMORY")
        # Checkpoints run off the event loop (`checkpoint`, from a worker thread): one at a
        # commit cost that commit several fsyncs (milliseconds, for every client). This
        # connection checkpoints only past 256 MiB of WAL, a backstop.
        self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
        self._checkpointer: sqlite3.Connection | None = None
        self._depth = 0
        self._migrate()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version != 0:
            raise StoreUnavailable(
                f"{self.path} has schema version {version}; this lokid knows {SCHEMA_VERSION} "
                "(a newer lokid wrote it: upgrade lokid)",
                {"schema": version},
            )
        # One script, one transaction: a crash mid-way leaves version 0 and no tables.
        self._db.executescript(
            f"BEGIN IMMEDIATE; {_SCHEMA}; PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
        )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; nested uses join the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from exc
        self._depth = 1
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise self._unavailable(exc) from exc
            raise
        finally:
            self._depth = 0

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """SAVEPOINT ... RELEASE inside the open transaction; on an exception ROLLBACK TO it
        (undoing only its own statements), then re-raise."""
        db = self._db
        try:
            db.execute("SAVEPOINT op")
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from exc
        self._depth += 1
        try:
            yield
        except BaseException:
            try:
                db.execute("ROLLBACK TO op")
                db.execute("RELEASE op")
            except sqlite3.OperationalError as exc:
                raise self._unavailable(exc) from exc
            raise
        else:
            try:
                db.execute("RELEASE op")
            except sqlite3.OperationalError as exc:
                raise self._unavailable(exc) from exc
        finally:
            self._depth -= 1

    def _unavailable(self, exc: sqlite3.OperationalError) -> StoreUnavailable:
        """A full disk, an I/O error or a read-only file: the client is told, nothing is
        half-done (the transaction was rolled back), and lokid carries on."""
        return StoreUnavailable(
            f"the state database {self.path}: {exc}", {"sqlite": exc.sqlite_errorname}
        )

    def close(self) -> None:
        self._db.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    def checkpoint(self) -> None:
        """Copy the WAL into the database (PASSIVE: never waits for, nor blocks, the writer).
        For a worker thread: it has its own connection."""
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(
                _uri(self.path), uri=True, isolation_level=None, check_same_thread=False
            )
            self._checkpointer.execute("PRAGMA busy_timeout=5000")
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def view_reader(self) -> SqliteViewReader:
        """A separate read-only connection for the view writer's thread (WAL lets it read
        while we write)."""
        db = sqlite3.connect(_uri(self.path, "mode=ro"), uri=True, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=5000")
        return SqliteViewReader(db)

    # -- tasks ---------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskRow | None:
        r = self._db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if r is None else _row(r)

    def states_of(self, ids: Iterable[str]) -> dict[str, str]:
        ids = list(ids)
        out: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id, state FROM tasks WHERE id IN ({marks})"
            out.update(self._db.execute(sql, chunk).fetchall())
        return out

    def live_id_for_key(self, key: str) -> str | None:
        r = self._db.execute("SELECT task_id FROM live_keys WHERE idem = ?", (key,)).fetchone()
        return None if r is None else r[0]

    def live_ids_for_keys(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(keys)
        out: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT idem, task_id FROM live_keys WHERE idem IN ({marks})"
            out.update(self._db.execute(sql, chunk).fetchall())
        return out

    def insert_many(self, rows: list[tuple[TaskRow, list[str], str, str]]) -> None:
        db = self._db
        db.executemany(
            "INSERT INTO tasks (id, state, type, priority, idem, available_at, deps_left, "
            "lease_until, claimed_by, rate_limits, probe, created, doc, extra) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.id, r.state, r.type, r.priority, idem, r.available_at, r.deps_left,
                    r.lease_until, r.claimed_by, r.rate_limits, int(r.probe), created, r.doc,
                    r.extra,
                )
                for r, _, idem, created in rows
            ],
        )  # fmt: skip
        db.executemany(
            "INSERT OR IGNORE INTO deps (task_id, dep_id) VALUES (?, ?)",
            [(r.id, dep) for r, deps, _, _ in rows for dep in deps],
        )
        db.executemany(
            "INSERT INTO live_keys (idem, task_id) VALUES (?, ?)",
            [(idem, r.id) for r, _, idem, _ in rows],
        )

    def hold_key(self, key: str, task_id: str) -> None:
        self._db.execute("INSERT INTO live_keys (idem, task_id) VALUES (?, ?)", (key, task_id))

    def release_key(self, key: str, task_id: str) -> None:
        self._db.execute("DELETE FROM live_keys WHERE idem = ? AND task_id = ?", (key, task_id))

    def insert(self, row: TaskRow, dependencies: list[str], idem: str, created: str) -> int:
        cur = self._db.execute(
            "INSERT INTO tasks (id, state, type, priority, idem, available_at, deps_left, "
            "lease_until, claimed_by, rate_limits, probe, created, doc, extra) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.id, row.state, row.type, row.priority, idem, row.available_at,
                row.deps_left, row.lease_until, row.claimed_by, row.rate_limits,
                int(row.probe), created, row.doc, row.extra,
            ),
        )  # fmt: skip
        if dependencies:
            self._db.executemany(
                "INSERT OR IGNORE INTO deps (task_id, dep_id) VALUES (?, ?)",
                [(row.id, dep) for dep in dependencies],
            )
        self.hold_key(idem, row.id)
        return cur.lastrowid

    def update(self, row: TaskRow) -> None:
        self._db.execute(
            "UPDATE tasks SET state = ?, available_at = ?, deps_left = ?, lease_until = ?, "
            "claimed_by = ?, rate_limits = ?, probe = ?, doc = ? WHERE seq = ?",
            (
                row.state, row.available_at, row.deps_left, row.lease_until, row.claimed_by,
                row.rate_limits, int(row.probe), row.doc, row.seq,
            ),
        )  # fmt: skip

    def delete(self, task_id: str) -> None:
        self._db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
        self._db.execute("DELETE FROM deps WHERE task_id = ?", (task_id,))

    def next_candidate(self, task_types: list[str], now: float) -> TaskRow | None:
        """One statement: each type's head from the claim index, then the best of those.

        (A UNION of per-type queries makes SQLite sort every ready task of each type;
        scalar subqueries keep the index's order, and one statement instead of one
        per type halves the cost of a claim for an agent of four types.)
        """
        best: TaskRow | None = None
        for start in range(0, len(task_types), _TYPES_PER_CLAIM_QUERY):
            chunk = task_types[start : start + _TYPES_PER_CLAIM_QUERY]
            r = self._db.execute(
                _claim_sql(len(chunk)), [arg for task_type in chunk for arg in (task_type, now)]
            ).fetchone()
            if r is not None and (
                best is None or claim_key(r[4], r[0]) < claim_key(best.priority, best.seq)
            ):
                best = _row(r)
        return best

    def dependents(self, task_id: str) -> list[TaskRow]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE id IN (SELECT task_id FROM deps WHERE dep_id = ?)",
            (task_id,),
        ).fetchall()
        return [_row(r) for r in rows]

    def release_dependents(self, task_id: str) -> None:
        """`task_id` completed: each task waiting on it waits on one fewer."""
        self._db.execute(
            "UPDATE tasks SET deps_left = deps_left - 1 "
            "WHERE id IN (SELECT task_id FROM deps WHERE dep_id = ?) AND deps_left > 0",
            (task_id,),
        )

    def depended_on(self) -> set[str]:
        """The ids some task depends on (one scan, when the queue opens)."""
        return {r[0] for r in self._db.execute("SELECT DISTINCT dep_id FROM deps")}

    def leases(self) -> list[tuple[str, float]]:
        """Every in-progress task's lease (one scan, when the queue opens)."""
        return self._db.execute(
            "SELECT id, lease_until FROM tasks WHERE state = 'in-progress'"
        ).fetchall()

    def page(self, state: str | None, task_type: str | None, after: int, limit: int):
        where, args = ["seq > ?"], [after]
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if task_type is not None:
            where.append("type = ?")
            args.append(task_type)
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [_row(r) for r in rows]

    def counts(self) -> list[tuple[str, str, int]]:
        return self._db.execute(
            "SELECT state, type, count(*) FROM tasks GROUP BY state, type"
        ).fetchall()

    def blocked_by_dependencies(self) -> int:
        return self._db.execute(
            "SELECT count(*) FROM tasks WHERE state = 'pending' AND deps_left > 0"
        ).fetchone()[0]

    def oldest_pending_created(self) -> str | None:
        r = self._db.execute(
            "SELECT created FROM tasks WHERE state = 'pending' ORDER BY seq LIMIT 1"
        ).fetchone()
        return None if r is None else r[0]

    # -- breakers ------------------------------------------------------------------------

    def probes_in_flight(self) -> list[tuple[str, int]]:
        return self._db.execute(
            "SELECT type, count(*) FROM tasks WHERE state = 'in-progress' AND probe = 1 "
            "GROUP BY type"
        ).fetchall()

    def breakers(self) -> list[BreakerRow]:
        rows = self._db.execute(
            "SELECT type, state, failures, last_failure, opened_at, half_open_at, forced, reason "
            "FROM breakers"
        ).fetchall()
        return [BreakerRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7]) for r in rows]

    def save_breaker(self, row: BreakerRow) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO breakers "
            "(type, state, failures, last_failure, opened_at, half_open_at, forced, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.type, row.state, row.failures, row.last_failure, row.opened_at,
                row.half_open_at, int(row.forced), row.reason,
            ),
        )  # fmt: skip


class SqliteViewReader:
    """Reads one state's tasks as the JSON array its view file holds."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def read(self, state: str, newest: int | None = None) -> bytes:
        """One state's tasks as a JSON array of their documents, oldest first.

        SQLite builds the array itself, so a view of 100,000 tasks costs the
        daemon's thread no Python objects and no GIL while it is assembled. Extra
        fields kept from Loki Mode's files are spliced into each object.
        """
        limit = "" if newest is None else f"ORDER BY seq DESC LIMIT {int(newest)}"
        row = self._db.execute(
            "SELECT CAST('[' || coalesce(group_concat(item, ','), '') || ']' AS BLOB) FROM ("
            "  SELECT CASE WHEN extra IS NULL OR length(extra) <= 2 THEN doc"
            "         ELSE substr(doc, 1, length(doc) - 1) || ',' || substr(extra, 2) END AS item"
            f"  FROM (SELECT seq, doc, extra FROM tasks WHERE state = ? {limit}) ORDER BY seq)",
            (state,),
        ).fetchone()
        return row[0]

    def close(self) -> None:
        self._db.close()

    def checkpoint(self) -> None:
        """Copy the WAL into the database (PASSIVE: never waits for, nor blocks, the writer).
        For a worker thread: it has its own connection."""
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(
                _uri(self.path), uri=True, isolation_level=None, check_same_thread=False
            )
            self._checkpointer.execute("PRAGMA busy_timeout=5000")
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
