"""Subscriptions and event fan-out.

Every event goes to each matching subscription through its subscriber's outbox, which
refuses rather than grows when the client is not reading. A refused event still takes its
`seq`, so the gap is visible; once the outbox drains, the subscription's next message is a
`resync` event naming the gap, telling the client to re-read state instead of trusting its
picture.

The hub knows subscribers only through the small `Subscriber` protocol (a connection is one),
so it can be tested, and used, without a socket.
"""

from __future__ import annotations

import fnmatch
import itertools
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgspec

from lokid.errors import InvalidParams
from lokid.wire.daemon import Event
from lokid.wire.events import EventData, Resync
from lokid.wire.messages import Notification
from lokid.wire.times import iso

log = logging.getLogger("lokid.hub")

_encode_data = msgspec.msgpack.Encoder().encode


class Subscriber(Protocol):
    """What the hub needs of a client: an id, a non-blocking offer, a wake-up on space."""

    id: int

    def offer_event(self, frame: bytes | bytearray) -> bool:
        """Queue an event frame if it fits; False means it was dropped."""
        ...

    def on_space(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the subscriber's queue has room again after a refusal."""
        ...


Observer = Callable[[str, str | None, str, Any], None]
Encode = Callable[[Notification], bytes | bytearray]


# What one client may ask the hub for: a hostile list must cost it an error, not cost
# everyone a slower publish (each subscription is looked at for every event).
MAX_PATTERNS = 64  # globs in one subscription
MAX_PATTERN_LENGTH = 200
MAX_CLIENT_PATTERNS = 256  # globs over all of one client's subscriptions
MAX_CLIENT_SUBSCRIPTIONS = 64
# Topics remembered per subscription with whether they match (lokid's topics are a few
# dozen; the bound only guards against a caller publishing arbitrary ones).
MATCH_CACHE = 1024


def compile_topics(patterns: Iterable[str]) -> re.Pattern[str]:
    """Topic globs (`queue.*`, `signal.*`, `*`) as one regex."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def check_topics(topics: list[str]) -> None:
    """Refuse a subscription's globs beyond the limits, with a one-line reason."""
    if len(topics) > MAX_PATTERNS:
        raise InvalidParams(
            f"subscribe: {len(topics)} topic globs; at most {MAX_PATTERNS} in one subscription",
            {"limit": MAX_PATTERNS},
        )
    for topic in topics:
        if len(topic) > MAX_PATTERN_LENGTH:
            raise InvalidParams(
                f"subscribe: a topic glob of {len(topic)} characters; at most {MAX_PATTERN_LENGTH}",
                {"limit": MAX_PATTERN_LENGTH},
            )


class Subscription:
    __slots__ = (
        "_matcher",
        "_seen",
        "dropped_first",
        "dropped_last",
        "id",
        "patterns",
        "project",
        "seq",
        "subscriber",
    )

    def __init__(
        self, sub_id: int, subscriber: Subscriber, topics: list[str], project: str | None
    ) -> None:
        self.id = sub_id
        self.subscriber = subscriber
        self.patterns = tuple(dict.fromkeys(topics))
        self._matcher: re.Pattern[str] | None = None  # compiled at the first unseen topic
        self._seen: dict[str, bool] = {}
        self.project = project
        self.seq = 0
        self.dropped_first: int | None = None
        self.dropped_last = 0

    def wants(self, topic: str, project: str | None) -> bool:
        if self.project is not None and project is not None and project != self.project:
            return False
        hit = self._seen.get(topic)
        if hit is None:
            if self._matcher is None:
                self._matcher = compile_topics(self.patterns)
            hit = self._matcher.match(topic) is not None
            if len(self._seen) < MATCH_CACHE:
                self._seen[topic] = hit
        return hit


class Hub:
    def __init__(self, encode: Encode) -> None:
        self._encode = encode
        self._subs: dict[int, Subscription] = {}
        self._ids = itertools.count(1)
        self._by_subscriber: dict[int, set[int]] = {}
        self.published = 0
        # Called with (topic, project, time, data) for every event, subscribers or not.
        self.observers: list[Observer] = []

    def subscribe(
        self, subscriber: Subscriber, topics: list[str], project: str | None
    ) -> Subscription:
        """A new subscription; InvalidParams past the limits (per subscription, per client)."""
        check_topics(topics)
        owned = self._by_subscriber.get(subscriber.id, set())
        if len(owned) >= MAX_CLIENT_SUBSCRIPTIONS:
            raise InvalidParams(
                f"subscribe: this connection holds {len(owned)} subscriptions already; at most "
                f"{MAX_CLIENT_SUBSCRIPTIONS} (unsubscribe one, or widen a glob)",
                {"limit": MAX_CLIENT_SUBSCRIPTIONS},
            )
        held = sum(len(self._subs[i].patterns) for i in owned if i in self._subs)
        if held + len(topics) > MAX_CLIENT_PATTERNS:
            raise InvalidParams(
                f"subscribe: this connection would hold {held + len(topics)} topic globs; at "
                f"most {MAX_CLIENT_PATTERNS} over all its subscriptions",
                {"limit": MAX_CLIENT_PATTERNS},
            )
        sub = Subscription(next(self._ids), subscriber, topics, project)
        self._subs[sub.id] = sub
        owned = self._by_subscriber.setdefault(subscriber.id, set())
        if not owned:
            subscriber.on_space(lambda: self._resync_subscriber(subscriber.id))
        owned.add(sub.id)
        return sub

    def unsubscribe(self, subscriber: Subscriber, sub_id: int) -> bool:
        sub = self._subs.get(sub_id)
        if sub is None or sub.subscriber is not subscriber:
            return False
        del self._subs[sub_id]
        self._by_subscriber[subscriber.id].discard(sub_id)
        return True

    def drop(self, subscriber: Subscriber) -> None:
        """The subscriber went away: forget its subscriptions."""
        for sub_id in self._by_subscriber.pop(subscriber.id, ()):
            self._subs.pop(sub_id, None)

    @property
    def subscriptions(self) -> int:
        return len(self._subs)

    def emit(self, project: str | None, data: EventData) -> None:
        """Publish an event whose topic is its type's."""
        self.publish(data.TOPIC, project, data)

    def publish(self, topic: str, project: str | None, data: Any = None) -> None:
        self.published += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event %s project=%s", topic, project)
        if not self._subs and not self.observers:
            return
        now = iso(time.time())
        for observer in self.observers:
            observer(topic, project, now, data)
        body: msgspec.Raw | None = None
        for sub in list(self._subs.values()):
            if sub.wants(topic, project):
                if body is None:  # encoded once, whatever the number of subscribers
                    body = msgspec.Raw(_encode_data(data))
                self._deliver(sub, topic, project, now, body)

    def _deliver(
        self, sub: Subscription, topic: str, project: str | None, now: str, body: msgspec.Raw
    ) -> None:
        if sub.dropped_first is not None and not self._send_resync(sub, now):
            sub.seq += 1
            self._dropped(sub)
            return
        sub.seq += 1
        frame = self._encode(
            Notification("event", Event(sub.id, sub.seq, topic, project, now, body))
        )
        if not sub.subscriber.offer_event(frame):
            self._dropped(sub)

    @staticmethod
    def _dropped(sub: Subscription) -> None:
        """The event numbered `sub.seq` did not fit; remember the gap for the resync."""
        if sub.dropped_first is None:
            sub.dropped_first = sub.seq
            log.info(
                "subscriber %d on connection %d is slow; dropping events",
                sub.id,
                sub.subscriber.id,
            )
        sub.dropped_last = sub.seq

    def _send_resync(self, sub: Subscription, now: str) -> bool:
        assert sub.dropped_first is not None
        data = Resync(
            dropped=sub.dropped_last - sub.dropped_first + 1,
            first=sub.dropped_first,
            last=sub.dropped_last,
        )
        event = Event(sub.id, sub.seq + 1, Resync.TOPIC, sub.project, now, data)
        if not sub.subscriber.offer_event(self._encode(Notification("event", event))):
            return False
        sub.seq += 1
        sub.dropped_first = None
        return True

    def _resync_subscriber(self, subscriber_id: int) -> None:
        now = iso(time.time())
        for sub_id in self._by_subscriber.get(subscriber_id, ()):
            sub = self._subs.get(sub_id)
            if sub is not None and sub.dropped_first is not None:
                self._send_resync(sub, now)
