"""A transaction's events as NOTIFY payloads (lokid/queue/shared.py): PostgreSQL takes at
most 8000 bytes a payload, so a big transaction is split, and one huge text is cut."""

from lokid.queue.shared import decode_notice, encode_notices
from lokid.wire import events as ev


def test_a_big_transaction_is_split_in_order_and_each_part_fits():
    events = [ev.QueueEnqueued(id=f"task-{i:05d}", type="eng", priority=5) for i in range(800)]
    payloads = encode_notices(events, {"pending", "breakers"})
    assert len(payloads) > 1
    assert all(len(p.encode()) < 8000 for p in payloads)
    back, views = [], []
    for payload in payloads:
        got, dirty = decode_notice(payload)
        back += got
        views += dirty
    assert back == events
    assert sorted(views) == ["breakers", "pending"]


def test_a_huge_error_text_is_cut_to_fit():
    error = "stack trace line\n" * 2000
    event = ev.QueueDeadLettered(id="t1", type="eng", retries=3, error=error)
    (payload,) = encode_notices([event], set())
    assert len(payload.encode()) < 8000
    (back,), _ = decode_notice(payload)
    assert back.id == "t1" and back.error.startswith("stack trace line") and len(back.error) < 1100


def test_nothing_to_say_sends_nothing_and_foreign_topics_are_skipped():
    assert encode_notices([], set()) == []
    events, views = decode_notice('{"p":0,"e":[["someone.else",{"x":1}]],"d":["pending"]}')
    assert events == [] and views == ["pending"]
