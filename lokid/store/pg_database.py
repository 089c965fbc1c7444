"""One PostgreSQL database (one URL): its connection pool, its schema, its clock, and how
its failures reach clients.

Shared by every project whose queue lives there (`lokid.projects` keys them apart), so a
lokid serving twenty projects on one server holds a handful of connections, not twenty.
Credentials never leave this module: messages name the server as `where` (user, host, port,
database), and a password that a library message might echo is cut out of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from lokid.errors import StoreUnavailable
from lokid.store.pg_schema import migrate

log = logging.getLogger("lokid.postgres")
# The pool logs every failed reconnect attempt while the server is away, in its own format;
# lokid says once that the server is gone and once that it is back (pg_events.py, area.py).
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

# One writer at a time per lokid (queue operations run on its event loop), plus the view
# writers' threads (one read each) and the sweeper: a few connections serve every project.
POOL_MAX = 4
# libpq's smallest connect timeout: how long a server that does not answer (a host gone,
# packets dropped) can hold up the operation that needed a new connection.
CONNECT_TIMEOUT = 2
# How long an operation waits for a pooled connection before it is answered `unavailable`.
POOL_WAIT = 2.0
# After a failure, operations are answered `unavailable` at once for this long instead of
# each waiting for a connection that is not coming; the pool keeps reconnecting meanwhile.
FAIL_FAST = 0.5
# Statements never wait longer than this for another transaction's row lock (a lokid that
# stopped answering mid-transaction holds its locks until the server notices it is gone).
LOCK_TIMEOUT_MS = 5000
# The clock is re-read from the server this often (see `clock`).
CLOCK_EVERY = 30.0

# Errors that say "try again": the server is (or was) unreachable, or this transaction lost
# a race to another lokid's (a deadlock broken by the server, a lock wait timed out).
RETRYABLE = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
    PoolTimeout,
)


def describe(url: str) -> str:
    """`user@host:port/database` of a URL, without its password (what messages name)."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "PostgreSQL (an unreadable URL)"
    host = str(info.get("host") or info.get("hostaddr") or "localhost")
    port = str(info.get("port") or "5432")
    db = str(info.get("dbname") or info.get("user") or "")
    user = f"{info['user']}@" if info.get("user") else ""
    return f"postgresql://{user}{host}:{port}/{db}"


def secret_of(url: str) -> str | None:
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        return None
    return str(password) if password else None


class Database:
    """The pool and schema of one URL; `store(project)` opens one project's queue in it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = describe(url)
        self._secret = secret_of(url)
        self._down_until = 0.0
        self._clock_at = -CLOCK_EVERY
        self._offset = 0.0  # server epoch seconds minus time.monotonic()
        self._lock = threading.Lock()
        self.connect_args = {
            "autocommit": True,
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": "lokid",
        }
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_MAX,
            open=False,
            timeout=POOL_WAIT,
            name="lokid",
            kwargs=self.connect_args,
            configure=self._configure,
            reconnect_timeout=365 * 86400,  # never give up: the server comes back
        )
        # One connection of our own first: it migrates the schema, reads the clock, and
        # fails with the server's own reason (refused, bad password) instead of the pool's
        # "no connection in time".
        try:
            with psycopg.connect(url, **self.connect_args) as conn:
                migrate(conn, self.where)
                self._read_clock(conn)
        except RETRYABLE as exc:
            raise self.unavailable(exc, "cannot connect") from exc
        self.pool.open(wait=False)

    def _configure(self, conn: psycopg.Connection) -> None:
        conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")

    def close(self) -> None:
        self.pool.close(timeout=1)

    # -- connections and errors --------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; every library error leaves as `StoreUnavailable`."""
        if time.monotonic() < self._down_until:
            raise StoreUnavailable(
                f"the PostgreSQL server {self.where} is unreachable (lokid keeps trying)",
                {"server": self.where},
            )
        try:
            with self.pool.connection() as conn:
                yield conn
        except RETRYABLE as exc:
            raise self.unavailable(exc) from exc

    def unavailable(self, exc: BaseException, what: str = "") -> StoreUnavailable:
        """A library error as the client's `unavailable`, naming the server, never the
        password; a lost server also makes the next operations fail fast for a moment."""
        if isinstance(exc, psycopg.errors.DeadlockDetected | psycopg.errors.LockNotAvailable):
            why = "another lokid's transaction held the same rows; try again"
        elif isinstance(exc, psycopg.errors.SerializationFailure):
            why = "a concurrent transaction of another lokid won; try again"
        else:
            why = self.scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            why = why or type(exc).__name__
            if isinstance(exc, PoolTimeout):
                why = f"no connection within {POOL_WAIT:g}s (is the server up?)"
            self._down_until = time.monotonic() + FAIL_FAST
            if not self.pool.closed:
                self.pool.check()  # drop broken idle connections now, not one per request
        if what:
            why = f"{what}: {why}"
        sqlstate = getattr(exc, "sqlstate", None)
        data = {"server": self.where, "sqlstate": sqlstate}
        return StoreUnavailable(f"the PostgreSQL server {self.where}: {why}", data)

    def scrub(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

    def up(self) -> None:
        """Someone reached the server again: stop failing fast."""
        self._down_until = 0.0

    # -- the server's clock --------------------------------------------------------------

    def clock(self) -> float:
        """The server's time now, in epoch seconds, without a round trip.

        Leases, backoff and `availableAt` must agree between lokids on hosts whose clocks
        differ, so they all use the server's clock: read once in a while (the sample with
        the shortest round trip, so within half of it) and carried forward on this host's
        monotonic clock, which steps of the wall clock do not move.
        """
        return time.monotonic() + self._offset

    def refresh_clock(self) -> None:
        """Re-read the server's clock when the last reading is old (the sweeper calls this)."""
        if time.monotonic() - self._clock_at < CLOCK_EVERY:
            return
        try:
            with self.connection() as conn:
                self._read_clock(conn)
        except StoreUnavailable:
            pass  # keep the last reading; the server's clock does not go away with it

    def _read_clock(self, conn: psycopg.Connection) -> None:
        best: tuple[float, float] | None = None
        for _ in range(3):
            sent = time.monotonic()
            (server,) = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
            got = time.monotonic()
            sample = (got - sent, float(server) - (sent + got) / 2)
            best = sample if best is None or sample[0] < best[0] else best
        assert best is not None
        with self._lock:
            self._offset = best[1]
            self._clock_at = time.monotonic()


def open_database(url: str) -> Database:
    return Database(url)
