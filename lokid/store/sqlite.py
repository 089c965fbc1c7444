"""The queue in an embedded SQLite database (WAL, one writer: this process).

Tasks are rows: the columns the queue searches by (state, type, priority,
availability, unmet dependencies, lease) beside the task's JSON document,
so a claim is one indexed lookup whatever the queue's length, and the JSON
views are written from the stored documents without re-encoding.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from lokid.domain.queue import CLAIM_ORDER_SQL, PRIORITY_NAME_SQL, claim_key
from lokid.errors import StoreUnavailable
from lokid.store.base import BreakerRow, NewRow, TaskRow

log = logging.getLogger("lokid.store")

T = TypeVar("T")

SCHEMA_VERSION = 2
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
    extra        BLOB,
    loki_priority TEXT  -- a story's priority as Loki Mode wrote it ("high"), for its files
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

-- Ids of tasks deleted for good: an old copy of a view can never bring one back.
CREATE TABLE tombstones (
    id TEXT PRIMARY KEY
) WITHOUT ROWID;
"""

# Schema upgrades, each from the version before it, in one transaction.
_UPGRADES = {
    2: """
ALTER TABLE tasks ADD COLUMN loki_priority TEXT;
CREATE TABLE tombstones (id TEXT PRIMARY KEY) WITHOUT ROWID;
""",
}

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


def _outside(exc: BaseException) -> bool:
    """An error of the file or the machine (full, read-only, corrupt, I/O), not of lokid's
    own statements (those are bugs and must look like bugs)."""
    return type(exc) in (sqlite3.OperationalError, sqlite3.DatabaseError)


def _reading(method: Callable[..., T]) -> Callable[..., T]:
    """A read outside a transaction: a file problem is `unavailable`, as in one."""

    @functools.wraps(method)
    def read(self: Any, *args: Any) -> T:
        try:
            return method(self, *args)
        except sqlite3.DatabaseError as exc:
            if not _outside(exc):
                raise
            raise self._unavailable(exc) from exc

    return read


def _store_error(path: Path, exc: sqlite3.DatabaseError) -> StoreUnavailable:
    return StoreUnavailable(f"the state database {path}: {exc}", {"sqlite": exc.sqlite_errorname})


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _in_chunks(db: sqlite3.Connection, sql: str, ids: Iterable[str]) -> list[Any]:
    """`sql` (with `IN ({})`) over `ids` in chunks SQLite's parameter limit allows."""
    ids = list(ids)
    rows: list[Any] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows += db.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall()
    return [r[0] if len(r) == 1 else r for r in rows]


class SqliteStore:
    """One database file per project, `.loki/lokid/lokid.db`."""

    def __init__(
        self,
        path: Path,
        durability: str = "normal",
        on_broken: Callable[[str], None] | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.durability = durability
        self.broken: str | None = None  # why the file can no longer be trusted
        self._on_broken = on_broken or (lambda why: None)
        self._db = self._connect()
        self._checkpointer: sqlite3.Connection | None = None  # see `checkpoint`
        self._depth = 0
        self._migrate()
        self._identity = self._files()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            _uri(self.path), uri=True, isolation_level=None, check_same_thread=False, timeout=0
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")  # the first statement takes the lock
        except sqlite3.OperationalError as exc:
            db.close()
            if exc.sqlite_errorname != "SQLITE_BUSY":
                raise
            raise StoreUnavailable(
                f"{self.path} is open in another process (another lokid serving this project?)",
                {"sqlite": exc.sqlite_errorname},
            ) from exc
        # normal: a commit survives a crash of this process (the WAL is in the OS's hands);
        # full: it also survives an OS crash or power loss (fsync on every commit).
        db.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'full' else 'NORMAL'}")
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("PRAGMA busy_timeout=5000")
        # (SQLite's default page cache, 2 MiB: measured, a 32 MiB one made each worker cycle
        # ~35 us slower although it saved ~7 preads; mmap is out, as a file truncated under
        # lokid, say by a `cp` over it, would be a SIGBUS.)
        # Savepoints (one per operation of a group commit) keep what they may have to undo
        # in a sub-journal: in memory, not in a temporary file.
        db.execute("PRAGMA temp_store=MEMORY")
        # Checkpoints run off the event loop (`checkpoint`, from a worker thread): one at a
        # commit cost that commit several fsyncs (milliseconds, for every client). This
        # connection checkpoints only past 256 MiB of WAL, a backstop.
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
        return db

    # -- the file under us -------------------------------------------------------------

    def _files(self) -> tuple[int | None, int | None]:
        """The inodes of the database and its WAL as they are on disk now (None: gone)."""
        return _inode(self.path), _inode(Path(f"{self.path}-wal"))

    def check_files(self) -> None:
        """Never acknowledge into a file no one will read again. Called after each commit,
        before its reply.

        The WAL deleted or replaced (the database file itself intact): what it held is still
        readable through our open handle, so it is checkpointed into the database file and
        a new WAL started; nothing acknowledged is lost. The database file deleted or
        replaced (say `rm -rf .loki`, a copy over it): the operation is refused, and so is
        every later one on this handle (the area then starts a new database on disk)."""
        if self.broken is None:
            db_now, wal_now = self._files()
            if db_now != self._identity[0]:
                self.broken = (
                    f"the state database {self.path} was deleted or replaced while lokid had "
                    "it open; nothing more is written into it"
                )
                self._on_broken(self.broken)
            elif wal_now != self._identity[1]:
                self._recover_wal()
        if self.broken is not None:
            raise StoreUnavailable(self.broken, {"file": str(self.path)})

    def _recover_wal(self) -> None:
        """Fold the lost WAL (still open here) into the database file, then start anew."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            if self._checkpointer is not None:  # it holds the lost WAL open too
                self._checkpointer.close()
                self._checkpointer = None
            self._db = self._connect()
            self._identity = self._files()
        except sqlite3.DatabaseError as exc:
            self.broken = f"the WAL of {self.path} was deleted and could not be saved: {exc}"
            self._on_broken(self.broken)
            return
        log.warning("%s-wal was deleted or replaced; its contents are saved in the file", self.path)

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"{self.path} has schema version {version}; this lokid knows {SCHEMA_VERSION} "
                "(a newer lokid wrote it: upgrade lokid)",
                {"schema": version},
            )
        # One script, one transaction: a crash mid-way leaves the version it started from.
        if version == 0:
            script = _SCHEMA
        else:
            script = "".join(_UPGRADES[v] for v in range(version + 1, SCHEMA_VERSION + 1))
        self._db.executescript(
            f"BEGIN IMMEDIATE; {script}; PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
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
        if self.broken is not None:
            raise StoreUnavailable(self.broken, {"file": str(self.path)})
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from exc
        self._depth = 1
        try:
            yield
            self._db.execute("COMMIT")
            self.check_files()
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            if _outside(exc):
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

    def _unavailable(self, exc: sqlite3.DatabaseError) -> StoreUnavailable:
        """A full disk, an I/O error, a read-only or corrupt file: the client is told,
        nothing is half-done (the transaction was rolled back), and lokid carries on."""
        return _store_error(self.path, exc)

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

    def fold_wal(self) -> None:
        """Fold the WAL into the database file and empty it (before moving the file)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def view_reader(self) -> SqliteViewReader:
        """A separate read-only connection for the view writer's thread (WAL lets it read
        while we write)."""
        try:
            db = sqlite3.connect(_uri(self.path, "mode=ro"), uri=True, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.DatabaseError as exc:
            raise self._unavailable(exc) from exc
        return SqliteViewReader(db, self.path)

    # -- tasks ---------------------------------------------------------------------------

    @_reading
    def get(self, task_id: str) -> TaskRow | None:
        r = self._db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if r is None else _row(r)

    @_reading
    def states_of(self, ids: Iterable[str]) -> dict[str, str]:
        return dict(_in_chunks(self._db, "SELECT id, state FROM tasks WHERE id IN ({})", ids))

    @_reading
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

    def insert_many(self, rows: list[NewRow]) -> None:
        db = self._db
        db.executemany(
            "INSERT INTO tasks (id, state, type, priority, idem, available_at, deps_left, "
            "lease_until, claimed_by, rate_limits, probe, created, doc, extra, loki_priority) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.id, r.state, r.type, r.priority, idem, r.available_at, r.deps_left,
                    r.lease_until, r.claimed_by, r.rate_limits, int(r.probe), created, r.doc,
                    r.extra, loki_priority,
                )
                for r, _, idem, created, loki_priority in rows
            ],
        )  # fmt: skip
        db.executemany(
            "INSERT OR IGNORE INTO deps (task_id, dep_id) VALUES (?, ?)",
            [(r.id, dep) for r, deps, *_ in rows for dep in deps],
        )
        db.executemany(
            "INSERT INTO live_keys (idem, task_id) VALUES (?, ?)",
            [(idem, r.id) for r, _, idem, *_ in rows],
        )

    def hold_key(self, key: str, task_id: str) -> None:
        self._db.execute("INSERT INTO live_keys (idem, task_id) VALUES (?, ?)", (key, task_id))

    def release_key(self, key: str, task_id: str) -> None:
        self._db.execute("DELETE FROM live_keys WHERE idem = ? AND task_id = ?", (key, task_id))

    def insert(
        self,
        row: TaskRow,
        dependencies: list[str],
        idem: str,
        created: str,
        loki_priority: str | None = None,
    ) -> int:
        cur = self._db.execute(
            "INSERT INTO tasks (id, state, type, priority, idem, available_at, deps_left, "
            "lease_until, claimed_by, rate_limits, probe, created, doc, extra, loki_priority) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.id, row.state, row.type, row.priority, idem, row.available_at,
                row.deps_left, row.lease_until, row.claimed_by, row.rate_limits,
                int(row.probe), created, row.doc, row.extra, loki_priority,
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
        """Gone for good, and remembered as gone (a tombstone)."""
        self._db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
        self._db.execute("DELETE FROM deps WHERE task_id = ?", (task_id,))
        self._db.execute("INSERT OR IGNORE INTO tombstones (id) VALUES (?)", (task_id,))

    @_reading
    def deleted(self, ids: Iterable[str]) -> set[str]:
        """Which of `ids` were tasks deleted for good."""
        return set(_in_chunks(self._db, "SELECT id FROM tombstones WHERE id IN ({})", ids))

    @_reading
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

    @_reading
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

    @_reading
    def depended_on(self) -> set[str]:
        """The ids some task depends on (one scan, when the queue opens)."""
        return {r[0] for r in self._db.execute("SELECT DISTINCT dep_id FROM deps")}

    @_reading
    def leases(self) -> list[tuple[str, float]]:
        """Every in-progress task's lease (one scan, when the queue opens)."""
        return self._db.execute(
            "SELECT id, lease_until FROM tasks WHERE state = 'in-progress'"
        ).fetchall()

    @_reading
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

    @_reading
    def counts(self) -> list[tuple[str, str, int]]:
        return self._db.execute(
            "SELECT state, type, count(*) FROM tasks GROUP BY state, type"
        ).fetchall()

    @_reading
    def blocked_by_dependencies(self) -> int:
        return self._db.execute(
            "SELECT count(*) FROM tasks WHERE state = 'pending' AND deps_left > 0"
        ).fetchone()[0]

    @_reading
    def oldest_pending_created(self) -> str | None:
        r = self._db.execute(
            "SELECT created FROM tasks WHERE state = 'pending' ORDER BY seq LIMIT 1"
        ).fetchone()
        return None if r is None else r[0]

    # -- breakers ------------------------------------------------------------------------

    @_reading
    def probes_in_flight(self) -> list[tuple[str, int]]:
        return self._db.execute(
            "SELECT type, count(*) FROM tasks WHERE state = 'in-progress' AND probe = 1 "
            "GROUP BY type"
        ).fetchall()

    @_reading
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


# A view entry in Loki Mode's words: the task document with its extra fields spliced in,
# then `status` (its state, as Loki Mode names it), `priority` (a name: Loki Mode's readers
# lower-case it), lokid's own number beside it, and the mark that says the entry is lokid's.
_VIEW_ITEM = (
    "json_set("
    "CASE WHEN extra IS NULL OR length(extra) <= 2 THEN doc"
    " ELSE substr(doc, 1, length(doc) - 1) || ',' || substr(extra, 2) END, "
    f"'$.status', ?, '$.priority', coalesce(loki_priority, {PRIORITY_NAME_SQL}), "
    "'$.lokidPriority', priority, '$.managedBy', 'lokid')"
)


class SqliteViewReader:
    """Reads one state's tasks as lokid's block of its view file (see files/queue_files).
    A corrupt file is `unavailable` here too: the view writer retries, nothing crashes."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    def _unavailable(self, exc: sqlite3.DatabaseError) -> StoreUnavailable:
        return StoreUnavailable(
            f"the state database {self.path}: {exc}", {"sqlite": exc.sqlite_errorname}
        )

    @_reading
    def read(self, state: str, status: str, newest: int | None = None) -> bytes:
        """One state's tasks as JSON objects separated by commas (no brackets), oldest
        first; `status` is the state in Loki Mode's words.

        SQLite builds the text itself, so a view of 100,000 tasks costs the daemon's
        thread no Python objects and no GIL while it is assembled."""
        limit = "" if newest is None else f"ORDER BY seq DESC LIMIT {int(newest)}"
        row = self._db.execute(
            f"SELECT CAST(coalesce(group_concat(item, ','), '') AS BLOB) FROM ("
            f"  SELECT {_VIEW_ITEM} AS item FROM ("
            f"    SELECT seq, doc, extra, priority, loki_priority FROM tasks"
            f"    WHERE state = ? {limit}) ORDER BY seq)",
            (status, state),
        ).fetchone()
        return row[0]

    @_reading
    def known(self, ids: list[str]) -> set[str]:
        """Which of `ids` are lokid's tasks, or were (deleted for good)."""
        found = _in_chunks(self._db, "SELECT id FROM tasks WHERE id IN ({})", ids)
        found += _in_chunks(self._db, "SELECT id FROM tombstones WHERE id IN ({})", ids)
        return set(found)

    def close(self) -> None:
        self._db.close()

    def checkpoint(self) -> None:
        """Fold the WAL into the database file and empty it (before moving the file)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
