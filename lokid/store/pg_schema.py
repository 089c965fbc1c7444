"""lokid's tables in PostgreSQL, created and migrated by lokid itself.

Everything lives in the schema `lokid`, beside whatever else the database holds. Each
project's rows carry its number from `lokid.projects`, so one database serves many projects
(and many lokid instances). `lokid.meta` holds the schema's version; `MIGRATIONS[n]` takes
version n to n + 1. Instances starting together take a transaction-level advisory lock, so
exactly one migrates and the others wait and see the result; an instance older than the
database refuses it with a clear message instead of writing a shape it does not know.
"""

from __future__ import annotations

import psycopg

from lokid.errors import StoreUnavailable

# pg_advisory_xact_lock key: "lokid" in ASCII, the schema's migration lock.
MIGRATION_LOCK = 0x6C6F6B6964

_V1 = """
CREATE SCHEMA IF NOT EXISTS lokid;
CREATE TABLE lokid.meta (version integer NOT NULL);
INSERT INTO lokid.meta VALUES (0);

CREATE TABLE lokid.projects (
    id      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name    text NOT NULL UNIQUE,
    created timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE lokid.tasks (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project      integer NOT NULL,
    id           text NOT NULL,
    state        text NOT NULL,
    type         text NOT NULL,
    priority     integer NOT NULL,
    idem         text NOT NULL,
    available_at double precision NOT NULL,
    deps_left    integer NOT NULL,
    lease_until  double precision,
    claimed_by   text,
    rate_limits  integer NOT NULL DEFAULT 0,
    probe        boolean NOT NULL DEFAULT false,
    created      text NOT NULL,
    doc          bytea NOT NULL,
    extra        bytea,
    UNIQUE (project, id)
);
-- The claim: one type's ready tasks in claim order (priority, then age).
CREATE INDEX tasks_ready ON lokid.tasks (project, type, priority DESC, seq)
    WHERE state = 'pending' AND deps_left = 0;
CREATE INDEX tasks_blocked ON lokid.tasks (project, seq)
    WHERE state = 'pending' AND deps_left > 0;
-- The sweep: leases in order of expiry (every instance looks, whoever is first expires).
CREATE INDEX tasks_leases ON lokid.tasks (project, lease_until)
    WHERE state = 'in-progress';
-- The views and `queue.list --state`: one state's tasks in order.
CREATE INDEX tasks_state ON lokid.tasks (project, state, seq);

CREATE TABLE lokid.live_keys (
    project integer NOT NULL,
    idem    text NOT NULL,
    task_id text NOT NULL,
    PRIMARY KEY (project, idem)
);

CREATE TABLE lokid.deps (
    project integer NOT NULL,
    task_id text NOT NULL,
    dep_id  text NOT NULL,
    PRIMARY KEY (project, task_id, dep_id)
);
CREATE INDEX deps_by_dep ON lokid.deps (project, dep_id);

CREATE TABLE lokid.breakers (
    project      integer NOT NULL,
    type         text NOT NULL,
    state        text NOT NULL,
    failures     integer NOT NULL,
    last_failure double precision,
    opened_at    double precision,
    half_open_at double precision,
    forced       boolean NOT NULL DEFAULT false,
    reason       text,
    PRIMARY KEY (project, type)
);

-- Queue depth for autoscalers (KEDA's postgresql scaler): tasks a worker could claim now.
CREATE VIEW lokid.ready AS
    SELECT p.name AS project, t.type, count(*) AS tasks
    FROM lokid.tasks t JOIN lokid.projects p ON p.id = t.project
    WHERE t.state = 'pending' AND t.deps_left = 0
      AND t.available_at <= extract(epoch FROM now())
    GROUP BY p.name, t.type;
"""

# Version 2: a story's priority as Loki Mode wrote it ("high"), kept for its files; ids of
# tasks deleted for good, so an old copy of a view file can never bring one back.
_V2 = """
ALTER TABLE lokid.tasks ADD COLUMN loki_priority text;
CREATE TABLE lokid.tombstones (
    project integer NOT NULL,
    id      text NOT NULL,
    PRIMARY KEY (project, id)
);
"""

MIGRATIONS: list[str] = [_V1, _V2]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: psycopg.Connection, where: str) -> None:
    """Bring the database to SCHEMA_VERSION, in one transaction, under the migration lock."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        version = _version(conn)
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the PostgreSQL database {where} has lokid schema version {version}; this "
                f"lokid knows {SCHEMA_VERSION} (a newer lokid wrote it: upgrade lokid)",
                {"schema": version},
            )
        for step in range(version, SCHEMA_VERSION):
            conn.execute(MIGRATIONS[step])
        if version < SCHEMA_VERSION:
            conn.execute("UPDATE lokid.meta SET version = %s", (SCHEMA_VERSION,))


def _version(conn: psycopg.Connection) -> int:
    exists = conn.execute("SELECT to_regclass('lokid.meta') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT version FROM lokid.meta").fetchone()
    return 0 if row is None else int(row[0])
