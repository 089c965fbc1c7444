"""The shared databases this lokid's queues live in: one pool, clock and notification
listener per PostgreSQL URL, opened on first use and kept for every project in it.

A shared queue's events and view changes reach this lokid only through the database's
notifications, whichever instance made them (this one too); `follow` routes a project's
notifications to its subscribers and its view writer, in commit order. psycopg is imported
only when some project's queue is in PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec

from lokid.errors import StoreUnavailable
from lokid.files.views import BREAKERS, VIEW_FILES, ViewWriter
from lokid.lifecycle import Spawner
from lokid.queue.shared import decode_notice
from lokid.wire import events as ev
from lokid.wire.events import EventData

log = logging.getLogger("lokid.queues")


class Databases:
    def __init__(self, spawn: Spawner) -> None:
        self._spawn = spawn
        self._open: dict[str, tuple[Any, Any]] = {}  # URL -> (Database, Listener)
        self._followed: dict[str, tuple[str, Any]] = {}  # project path -> (URL, Channel)

    def store(self, url: str, name: str) -> Any:
        """Project `name`'s store in the database at `url` (StoreUnavailable: not now)."""
        from lokid.store.postgres import PostgresStore

        return PostgresStore(self._database(url), name)

    def _database(self, url: str) -> Any:
        opened = self._open.get(url)
        if opened is not None:
            return opened[0]
        try:
            from lokid.store.pg_database import RETRYABLE, open_database
            from lokid.store.pg_events import Listener
        except ImportError as exc:
            raise StoreUnavailable(
                f"a queue in PostgreSQL needs psycopg ({exc.name} is not installed): "
                "pip install 'lokid[postgres]'"
            ) from exc
        db = open_database(url)
        try:
            listener = Listener(db)
        except RETRYABLE as exc:
            db.close()
            raise db.unavailable(exc, "cannot listen for notifications") from exc
        self._open[url] = (db, listener)
        self._spawn(listener.run)
        return db

    def follow(
        self,
        path: str,
        store: Any,
        url: str,
        views: ViewWriter,
        emit: Callable[[str | None, EventData], None],
    ) -> None:
        """Publish the project's notifications here: its events to subscribers, its changed
        views to the view writer; after a reconnect, a resync of both."""
        from lokid.store.pg_events import Channel

        def on_notice(payload: str) -> None:
            try:
                events, dirty = decode_notice(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.debug("ignored a notification that is not lokid's on %s", store.channel)
                return
            for event in events:
                emit(path, event)
            if dirty:
                views.mark(set(dirty))

        def on_resync(reason: str) -> None:
            views.mark([*VIEW_FILES, BREAKERS])
            emit(path, ev.QueueResync(reason=reason))

        channel = Channel(store.channel, on_notice, on_resync)
        self._open[url][1].add(channel)
        self._followed[path] = (url, channel)

    def unfollow(self, path: str) -> None:
        followed = self._followed.pop(path, None)
        if followed is not None:
            self._open[followed[0]][1].remove(followed[1])

    def refresh_clocks(self) -> None:
        for db, _ in list(self._open.values()):
            db.refresh_clock()

    def close(self) -> None:
        for db, listener in self._open.values():
            listener.close()
            db.close()
        self._open.clear()
        self._followed.clear()
