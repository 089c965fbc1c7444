"""Durable state. `QueueStore` is the narrow interface the queue is written against;
`SqliteStore` is the embedded implementation, `postgres.PostgresStore` the shared one (not
imported here: it needs psycopg, which only PostgreSQL users install)."""

from lokid.store.base import BreakerRow, QueueStore, TaskRow
from lokid.store.sqlite import SqliteStore

__all__ = ["BreakerRow", "QueueStore", "SqliteStore", "TaskRow"]
