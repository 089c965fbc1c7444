"""Subscriptions and event fan-out.

Every event goes to each matching subscription through its connection's
outbox, which refuses rather than grows when the client is not reading. A
refused event still takes its `seq`, so the gap is visible; once the outbox
drains, the subscription's next message is a `resync` event naming the gap,
telling the client to re-read state instead of trusting its picture.
"""

from __future__ import annotations

import fnmatch
import itertools
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from lokid.wire.daemon import Event
from lokid.wire.messages import Notification
from lokid.wire.times import iso

if TYPE_CHECKING:
    from lokid.server.connection import Connection

log = logging.getLogger("lokid.hub")

RESYNC = "resync"


def compile_topics(patterns: Iterable[str]) -> re.Pattern[str]:
    """Topic globs (`queue.*`, `signal.*`, `*`) as one regex."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


class Subscription:
    __slots__ = ("conn", "dropped_first", "dropped_last", "id", "matcher", "project", "seq")

    def __init__(self, sub_id: int, conn: Connection, topics: list[str], project: str | None):
        self.id = sub_id
        self.conn = conn
        self.matcher = compile_topics(topics)
        self.project = project
        self.seq = 0
        self.dropped_first: int | None = None
        self.dropped_last = 0

    def wants(self, topic: str, project: str | None) -> bool:
        if self.project is not None and project is not None and project != self.project:
            return False
        return self.matcher.match(topic) is not None


class Hub:
    def __init__(self, encode: Callable[[Notification], bytes | bytearray]) -> None:
        self._encode = encode
        self._subs: dict[int, Subscription] = {}
        self._ids = itertools.count(1)
        self._by_conn: dict[int, set[int]] = {}
        self.published = 0
        # Called with (topic, project, time, data) for every event, subscribers or not.
        self.observers: list[Callable[[str, str | None, str, Any], None]] = []

    def subscribe(self, conn: Connection, topics: list[str], project: str | None) -> Subscription:
        sub = Subscription(next(self._ids), conn, topics, project)
        self._subs[sub.id] = sub
        owned = self._by_conn.setdefault(conn.id, set())
        if not owned:
            conn.outbox.on_space(lambda: self._resync_connection(conn.id))
        owned.add(sub.id)
        return sub

    def unsubscribe(self, conn: Connection, sub_id: int) -> bool:
        sub = self._subs.get(sub_id)
        if sub is None or sub.conn is not conn:
            return False
        del self._subs[sub_id]
        self._by_conn[conn.id].discard(sub_id)
        return True

    def drop_connection(self, conn: Connection) -> None:
        for sub_id in self._by_conn.pop(conn.id, ()):
            self._subs.pop(sub_id, None)

    @property
    def subscriptions(self) -> int:
        return len(self._subs)

    def publish(self, topic: str, project: str | None, data: Any = None) -> None:
        self.published += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event %s project=%s", topic, project)
        if not self._subs and not self.observers:
            return
        now = iso(time.time())
        for observer in self.observers:
            observer(topic, project, now, data)
        for sub in list(self._subs.values()):
            if sub.wants(topic, project):
                self._deliver(sub, topic, project, now, data)

    def _deliver(self, sub: Subscription, topic: str, project: str | None, now: str, data: Any):
        if sub.dropped_first is not None and not self._send_resync(sub, now):
            sub.seq += 1
            self._dropped(sub)
            return
        sub.seq += 1
        event = Event(sub.id, sub.seq, topic, project, now, data)
        frame = self._encode(Notification("event", event))
        if not sub.conn.offer_event(frame):
            self._dropped(sub)

    @staticmethod
    def _dropped(sub: Subscription) -> None:
        """The event numbered `sub.seq` did not fit; remember the gap for the resync."""
        if sub.dropped_first is None:
            sub.dropped_first = sub.seq
            log.info("subscriber %d on connection %d is slow; dropping events", sub.id, sub.conn.id)
        sub.dropped_last = sub.seq

    def _send_resync(self, sub: Subscription, now: str) -> bool:
        data = {
            "dropped": sub.dropped_last - sub.dropped_first + 1,
            "first": sub.dropped_first,
            "last": sub.dropped_last,
        }
        frame = self._encode(
            Notification("event", Event(sub.id, sub.seq + 1, RESYNC, sub.project, now, data))
        )
        if not sub.conn.offer_event(frame):
            return False
        sub.seq += 1
        sub.dropped_first = None
        return True

    def _resync_connection(self, conn_id: int) -> None:
        now = iso(time.time())
        for sub_id in self._by_conn.get(conn_id, ()):
            sub = self._subs.get(sub_id)
            if sub is not None and sub.dropped_first is not None:
                self._send_resync(sub, now)
