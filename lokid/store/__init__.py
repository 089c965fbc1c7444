"""Durable state. `QueueStore` is the narrow interface the queue is written against;
`SqliteStore` is the embedded implementation (a server-backed one could follow)."""

from lokid.store.base import BreakerRow, QueueStore, TaskRow
from lokid.store.sqlite import SqliteStore

__all__ = ["BreakerRow", "QueueStore", "SqliteStore", "TaskRow"]
