"""The hub on its own: topic and project matching, gapless seq, drops and the resync, with
subscribers that are plain objects (the hub needs only the Subscriber protocol)."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from lokid.hub import Hub
from lokid.server.connection import encode_message
from lokid.wire.events import QueueEnqueued
from lokid.wire.framing import FrameDecoder


class Inbox:
    """A subscriber with room for `room` frames; `drain()` makes room and says so."""

    def __init__(self, sub_id: int, room: int = 1000) -> None:
        self.id = sub_id
        self.room = room
        self.frames: list[bytes] = []
        self._callbacks: list[Callable[[], None]] = []

    def offer_event(self, frame: bytes | bytearray) -> bool:
        if len(self.frames) >= self.room:
            return False
        self.frames.append(bytes(frame))
        return True

    def on_space(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def drain(self) -> list[dict]:
        events = self.events()
        self.frames.clear()
        for callback in self._callbacks:
            callback()
        return events

    def events(self) -> list[dict]:
        decoder = FrameDecoder()
        out = []
        for frame in self.frames:
            for body in decoder.feed(frame):
                kind, method, params = msgspec.msgpack.decode(body)
                assert (kind, method) == (2, "event")
                out.append(params)
        return out


def enqueued(n: int) -> QueueEnqueued:
    return QueueEnqueued(id=f"t{n}", type="eng", priority=5)


def test_topics_are_globs_and_a_project_filter_keeps_daemon_wide_events():
    hub = Hub(encode_message)
    everything, queue_only, app_only = Inbox(1), Inbox(2), Inbox(3)
    hub.subscribe(everything, ["*"], None)
    hub.subscribe(queue_only, ["queue.*"], None)
    hub.subscribe(app_only, ["*"], "/app")
    hub.emit("/app", enqueued(1))
    hub.publish("signal.stop", "/other", {"file": "STOP"})
    hub.publish("daemon.stopping", None, {"pid": 1})
    assert [e["topic"] for e in everything.events()] == [
        "queue.enqueued",
        "signal.stop",
        "daemon.stopping",
    ]
    assert [e["topic"] for e in queue_only.events()] == ["queue.enqueued"]
    assert [e["topic"] for e in app_only.events()] == ["queue.enqueued", "daemon.stopping"]
    event = everything.events()[0]
    assert event["data"] == {"id": "t1", "type": "eng", "priority": 5}
    assert event["project"] == "/app" and event["sub"] == 1 and event["seq"] == 1


def test_every_subscriber_gets_the_same_data_and_its_own_numbering():
    hub = Hub(encode_message)
    a, b = Inbox(1), Inbox(2)
    first = hub.subscribe(a, ["queue.*"], None)
    hub.emit("/p", enqueued(1))
    second = hub.subscribe(b, ["queue.*"], None)
    hub.emit("/p", enqueued(2))
    assert [(e["sub"], e["seq"]) for e in a.events()] == [(first.id, 1), (first.id, 2)]
    assert [(e["sub"], e["seq"]) for e in b.events()] == [(second.id, 1)]
    assert a.events()[1]["data"] == b.events()[0]["data"]


def test_a_slow_subscriber_loses_events_then_hears_exactly_which():
    hub = Hub(encode_message)
    slow = Inbox(1, room=2)
    sub = hub.subscribe(slow, ["*"], None)
    for n in range(5):
        hub.emit("/p", enqueued(n))
    seen = slow.drain()  # room again: the resync goes out at once
    assert [e["seq"] for e in seen] == [1, 2]
    resync = slow.events()
    assert resync == [
        {
            "sub": sub.id,
            "seq": 6,
            "topic": "resync",
            "project": None,
            "time": resync[0]["time"],
            "data": {"dropped": 3, "first": 3, "last": 5},
        }
    ]
    hub.emit("/p", enqueued(9))
    assert [e["seq"] for e in slow.events()] == [6, 7]


def test_a_resync_that_does_not_fit_waits_and_the_gap_grows():
    hub = Hub(encode_message)
    slow = Inbox(1, room=1)
    hub.subscribe(slow, ["*"], None)
    hub.emit("/p", enqueued(0))
    hub.emit("/p", enqueued(1))  # dropped: seq 2
    hub.emit("/p", enqueued(2))  # the resync does not fit either: seq 3 dropped too
    slow.frames.clear()  # room, but the hub was not told: the next event carries the resync
    hub.emit("/p", enqueued(3))
    events = slow.events()
    assert events[0]["topic"] == "resync"
    assert events[0]["data"] == {"dropped": 2, "first": 2, "last": 3}


def test_observers_see_every_event_even_without_subscribers():
    hub = Hub(encode_message)
    seen = []
    hub.observers.append(lambda topic, project, time, data: seen.append((topic, project, data)))
    hub.emit("/p", enqueued(1))
    assert seen == [("queue.enqueued", "/p", enqueued(1))]


def test_unsubscribe_is_for_the_owner_and_a_dropped_subscriber_is_forgotten():
    hub = Hub(encode_message)
    a, b = Inbox(1), Inbox(2)
    sub = hub.subscribe(a, ["*"], None)
    hub.subscribe(b, ["*"], None)
    assert not hub.unsubscribe(b, sub.id)
    assert hub.unsubscribe(a, sub.id)
    assert not hub.unsubscribe(a, sub.id)
    hub.drop(b)
    assert hub.subscriptions == 0
    hub.emit("/p", enqueued(1))
    assert a.events() == [] and b.events() == []
