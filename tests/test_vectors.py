"""The shared wire vectors (clients/vectors/vectors.json) through the Python decoder.

The Lua and TypeScript clients run the same file through their own decoders, so the three
agree with each other and with PROTOCOL.md.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lokid.wire import ERROR_CODES, FrameDecoder
from lokid.wire.daemon import Event
from lokid.wire.events import EVENT_TYPES
from lokid.wire.messages import Notification, Request, Response

ROOT = Path(__file__).resolve().parent.parent
VECTORS_DIR = ROOT / "clients" / "vectors"
DOC = json.loads((VECTORS_DIR / "vectors.json").read_text())
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

typed = msgspec.msgpack.Decoder(Request | Response | Notification)
plain = msgspec.msgpack.Decoder()


def classify(body: bytes) -> tuple[str, Any]:
    """What PROTOCOL.md says a frame body is: (kind, value), kind "invalid" if none."""
    try:
        value = plain.decode(body)
        msg = typed.decode(body)
    except msgspec.DecodeError:
        return "invalid", None
    expected_len = 3 if isinstance(msg, Notification) else 4
    if len(value) != expected_len:
        return "invalid", None
    if isinstance(msg, Request):
        assert isinstance(value[3], dict), "params is a map"
        return "request", value
    if isinstance(msg, Response):
        if msg.error is None:
            assert msg.msgid is not None
            return "response", value
        assert set(value[2]) <= {"code", "message", "data"}
        assert msg.error.code in ERROR_CODES
        assert "\n" not in msg.error.message
        assert msg.result is None, "on failure result is nil"
        return "error-response", value
    if msg.method == "event":
        event = msgspec.convert(msg.params, Event)
        assert event.seq >= 1 and event.sub >= 0
        assert TIME.match(event.time), event.time
        assert re.match(r"^[a-z$][\w.$-]*$", event.topic)
        return "event", value
    return "notification", value


def run_vector(vec: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None, int]:
    decoder = FrameDecoder(vec["max_frame"])
    frames: list[dict[str, Any]] = []
    error = None
    for chunk in vec["chunks"]:
        for body in decoder.feed(bytes.fromhex(chunk)):
            kind, value = classify(body)
            frames.append({"kind": kind, "message": value})
        if (exc := decoder.error) is not None:
            error = {"code": "too_large", "length": exc.length, "limit": exc.limit}
            break
    pending = 0 if error else decoder.pending
    return frames, error, pending


@pytest.mark.parametrize("vec", DOC["vectors"], ids=[v["name"] for v in DOC["vectors"]])
def test_vector(vec: dict[str, Any]) -> None:
    frames, error, pending = run_vector(vec)
    assert frames == vec["frames"]
    assert error == vec["error"]
    assert pending == vec["pending"]


def test_single_frame_vectors_are_what_the_python_encoder_writes() -> None:
    enc = msgspec.msgpack.Encoder()
    for vec in DOC["vectors"]:
        if len(vec["chunks"]) != 1 or len(vec["frames"]) != 1 or vec["error"] or vec["pending"]:
            continue
        frame = vec["frames"][0]
        if frame["kind"] == "invalid":
            continue
        data = bytes.fromhex(vec["chunks"][0])
        assert data[4:] == enc.encode(frame["message"]), vec["name"]


def test_the_vectors_cover_the_brief() -> None:
    kinds = {f["kind"] for v in DOC["vectors"] for f in v["frames"]}
    assert kinds == {
        "request",
        "response",
        "error-response",
        "notification",
        "event",
        "invalid",
    }
    assert any(len(v["chunks"]) > 1 and len(v["frames"]) == 1 for v in DOC["vectors"])
    assert any(len(v["chunks"]) == 1 and len(v["frames"]) == 2 for v in DOC["vectors"])
    assert any(v["error"] and v["error"]["code"] == "too_large" for v in DOC["vectors"])


def test_hello_vector_is_protocol_md_example() -> None:
    protocol = (ROOT / "PROTOCOL.md").read_text()
    example = "00 00 00 20  94 00 01 a5"
    assert example in protocol
    hello = next(v for v in DOC["vectors"] if v["name"] == "request hello")
    assert hello["chunks"][0].startswith(example.replace(" ", ""))


def test_the_committed_file_is_what_the_generator_writes(tmp_path: Path) -> None:
    out = tmp_path / "vectors.json"
    subprocess.run([sys.executable, str(VECTORS_DIR / "generate.py"), str(out)], check=True)
    assert out.read_text() == (VECTORS_DIR / "vectors.json").read_text()


def test_every_event_type_has_a_vector_whose_data_is_that_type() -> None:
    """PROTOCOL.md 5.1: the typed events and the vectors agree, key for key."""
    by_topic = {
        v["frames"][0]["message"][2]["topic"]: v["frames"][0]["message"][2]["data"]
        for v in DOC["vectors"]
        if v["name"].startswith("event data ")
    }
    for kind in EVENT_TYPES:
        topic = kind.TOPIC.replace("<name>", "budget-exceeded")
        assert topic in by_topic, f"no vector for {topic}"
        data = by_topic[topic]
        decoded = msgspec.convert(data, kind)
        assert msgspec.to_builtins(decoded) == data, topic
