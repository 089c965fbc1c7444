"""Write vectors.json: wire messages as hex bytes beside their meaning.

Run from the repo root: `.venv/bin/python clients/vectors/generate.py`. The output is
committed; every client's tests read it (PROTOCOL.md sections 2, 3 and 5).

Each vector is a byte stream cut into `chunks` (hex, one per read), decoded with a frame
limit of `max_frame`. `frames` lists, in order, what each whole frame means: `kind` is one of
request, response, error-response, notification, event, invalid (the body is not one
msgpack value of a message shape), and `message` is the decoded body as JSON (nil = null).
`error`, when set, is what the stream ends with (`too_large`: the announced length is over
the limit; the connection must be closed). `pending` is how many bytes are left over that
do not yet make a whole frame.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

import msgspec

LIMIT = 16 * 1024 * 1024
OUT = Path(__file__).with_name("vectors.json")
enc = msgspec.msgpack.Encoder()


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def msg(value: Any) -> bytes:
    return frame(enc.encode(value))


def one(name: str, kind: str, value: Any, note: str = "") -> dict[str, Any]:
    data = msg(value)
    return {
        "name": name,
        "note": note,
        "chunks": [data.hex()],
        "max_frame": LIMIT,
        "frames": [{"kind": kind, "message": value}],
        "error": None,
        "pending": 0,
    }


def stream(
    name: str,
    chunks: list[bytes],
    frames: list[tuple[str, Any]],
    *,
    max_frame: int = LIMIT,
    error: dict[str, Any] | None = None,
    pending: int = 0,
    note: str = "",
) -> dict[str, Any]:
    return {
        "name": name,
        "note": note,
        "chunks": [c.hex() for c in chunks],
        "max_frame": max_frame,
        "frames": [{"kind": k, "message": v} for k, v in frames],
        "error": error,
        "pending": pending,
    }


P = "/home/me/app"
T = "2026-11-21T05:34:24.123Z"
HELLO = {"server": "lokid", "version": "0.1.0", "protocol": 1, "capabilities": ["hello", "ping"]}


BREAKER = {
    "type": "eng",
    "state": "open",
    "failures": 5,
    "lastFailure": T,
    "openedAt": T,
    "halfOpenAt": "2026-11-21T05:35:24.123Z",
    "forced": False,
    "reason": None,
}
RUN_START = {
    "container": "loki-0123456789ab",
    "id": "c0ffee",
    "image": "asklokesh/loki-mode:latest",
    "image_id": "sha256:ab12",
    "port": None,
    "started_at": T,
    "pulled": True,
    "warnings": [],
}
# One example of each event's data, in PROTOCOL.md 5.1's order (a topic made at run time,
# `signal.<name>`, is shown for one name). tests/test_vectors.py checks each against its type.
EVENT_DATA: dict[str, Any] = {
    "resync": {"dropped": 3, "first": 4, "last": 6},
    "daemon.stopping": {"pid": 4100},
    "config.reloaded": {"source": "daemon"},
    "config.invalid": {"error": "circuit-breakers.yaml line 2, key defaults.x: unknown"},
    "queue.enqueued": {"id": "t1", "type": "eng", "priority": 5},
    "queue.claimed": {"id": "t1", "type": "eng", "agent": "a1"},
    "queue.completed": {"id": "t1", "type": "eng", "agent": "a1"},
    "queue.retrying": {
        "id": "t1",
        "type": "eng",
        "retries": 0,
        "availableAt": T,
        "error": "429 Too Many Requests",
        "rateLimited": True,
    },
    "queue.dead-lettered": {"id": "t1", "type": "eng", "retries": 3, "error": "crash"},
    "queue.cancelled": {"id": "t2", "type": "eng", "reason": "Parent t1 cancelled"},
    "queue.lease-expired": {"id": "t1", "type": "eng", "agent": "a1"},
    "queue.slowdown": {"type": None, "wait": 30.0},
    "queue.requeued": {"id": "t1", "type": "eng"},
    "queue.deleted": {"id": "t1", "type": "eng"},
    "queue.quarantined": {"file": "/p/.loki/queue/pending.json", "copy": "/q.json", "error": "x"},
    "queue.store-lost": {"file": "/p/.loki/lokid/lokid.db", "error": "deleted"},
    "queue.resync": {"reason": "reconnected to postgresql://lokid@db:5432/lokid"},
    "breaker.opened": BREAKER,
    "breaker.half-open": {**BREAKER, "state": "half-open"},
    "breaker.closed": {**BREAKER, "state": "closed", "failures": 0, "openedAt": None},
    "breaker.reset": {**BREAKER, "state": "closed", "failures": 0, "lastFailure": None},
    "signal.stop": {"file": "STOP"},
    "signal.stop-done": {"stopped": ["loki-0123456789ab"], "outcome": "stopped"},
    "signal.pause": {"file": "PAUSE"},
    "signal.resume": {"file": "PAUSE_AT_CHECKPOINT"},
    "signal.budget-exceeded": {"name": "BUDGET_EXCEEDED", "present": True, "content": None},
    "prd.changed": {
        "file": "generated-prd.md",
        "source": "generated",
        "prd_sha": "ab12",
        "signature": None,
        "origin_path": None,
    },
    "status.changed": {"mode": "autonomous", "phase": "build", "iteration": 3, "tasks": {}},
    "project.missing": {"path": P},
    "project.restored": {"path": P},
    "project.problem": {"path": P, "error": "cannot use /p/.loki: permission denied"},
    "image.pull": {
        "image": "asklokesh/loki-mode:latest",
        "layer": "ab12",
        "status": "Downloading",
        "current": 1024,
        "total": 4096,
    },
    "image.pruned": {
        "image": "asklokesh/loki-mode:latest",
        "id": "sha256:ab12",
        "removed": [{"id": "sha256:cd34", "tags": ["asklokesh/loki-mode:old"], "size": 10}],
        "failed": [],
        "kept_in_use": [],
        "reclaimed_bytes": 10,
        "message": "removed 1 image(s) of asklokesh/loki-mode, reclaimed 10 bytes",
    },
    "run.started": RUN_START,
    "run.stopped": {"containers": ["loki-0123456789ab"]},
    "run.exited": {"container": "loki-0123456789ab", "exitCode": 0},
    "run.adopted": {"container": "loki-0123456789ab", "id": "c0ffee"},
    "run.warning": {"message": "pull failed, using the local image"},
    "run.log": {"id": 12, "container": "loki-0123456789ab", "end": True, "lines": 40},
}


def vectors() -> list[dict[str, Any]]:
    v: list[dict[str, Any]] = []
    # -- requests (client -> daemon) ------------------------------------------------------
    hello = [0, 1, "hello", {"client": "nvim", "protocol": 1}]
    v.append(one("request hello", "request", hello, "PROTOCOL.md section 7, byte for byte"))
    v.append(one("request with empty params", "request", [0, 2, "ping", {}]))
    v.append(
        one(
            "request subscribe",
            "request",
            [0, 3, "subscribe", {"topics": ["queue.*", "breaker.*"], "project": P}],
        )
    )
    v.append(
        one(
            "request with a large msgid and nested params",
            "request",
            [
                0,
                4294967297,
                "queue.enqueue",
                {"project": P, "task": {"type": "eng", "priority": 8, "payload": {"goal": "ü✓"}}},
            ],
            "msgid above 32 bits (uint64 encoding), non-ASCII UTF-8 text",
        )
    )
    v.append(
        one("notification $/cancel", "notification", [2, "$/cancel", {"id": 4}], "client -> daemon")
    )
    # -- responses (daemon -> client) -----------------------------------------------------
    v.append(one("response with a result", "response", [1, 1, None, {**HELLO, "pid": 4100}]))
    v.append(
        one(
            "response whose result holds nil",
            "response",
            [1, 5, None, {"task": None}],
            "queue.claim with nothing to hand out",
        )
    )
    v.append(
        one(
            "response with floats and negative numbers",
            "response",
            [1, 6, None, {"uptime_s": 12.625, "lease": 0.1, "delta": -3, "big": -2147483649}],
        )
    )
    v.append(
        one(
            "error response without data",
            "error-response",
            [1, 7, {"code": "not_found", "message": "no task abc"}, None],
        )
    )
    v.append(
        one(
            "error response with data",
            "error-response",
            [
                1,
                8,
                {
                    "code": "invalid_params",
                    "message": "protocol 2 unsupported",
                    "data": {"protocol": 1},
                },
                None,
            ],
        )
    )
    v.append(
        one(
            "error response with nil msgid",
            "error-response",
            [
                1,
                None,
                {"code": "too_large", "message": "frame too large", "data": {"limit": LIMIT}},
                None,
            ],
            "an error that belongs to no request (a frame too large, a body that is not msgpack)",
        )
    )
    # -- events ----------------------------------------------------------------------------
    enqueued = {
        "sub": 1,
        "seq": 1,
        "topic": "queue.enqueued",
        "project": P,
        "time": T,
        "data": {"id": "t1", "type": "eng", "priority": 5},
    }
    v.append(one("event queue.enqueued", "event", [2, "event", enqueued]))
    v.append(
        one(
            "event daemon-wide",
            "event",
            [
                2,
                "event",
                {
                    "sub": 2,
                    "seq": 7,
                    "topic": "daemon.stopping",
                    "project": None,
                    "time": T,
                    "data": {"pid": 4100},
                },
            ],
            "project nil: a daemon-wide event",
        )
    )
    v.append(
        one(
            "event resync",
            "event",
            [
                2,
                "event",
                {
                    "sub": 1,
                    "seq": 40,
                    "topic": "resync",
                    "project": P,
                    "time": T,
                    "data": {"dropped": 12, "first": 28, "last": 39},
                },
            ],
        )
    )
    names = [f"loki-{i:012x}" for i in range(20)]
    v.append(
        one(
            "event with a 16-bit array and a long string",
            "event",
            [
                2,
                "event",
                {
                    "sub": 3,
                    "seq": 2,
                    "topic": "run.stopped",
                    "project": P,
                    "time": T,
                    "data": {"containers": names, "note": "x" * 300},
                },
            ],
            "array16, str16 encodings",
        )
    )
    breaker = {
        "type": "eng",
        "state": "open",
        "failures": 5,
        "lastFailure": T,
        "openedAt": T,
        "halfOpenAt": "2026-11-21T05:35:24.123Z",
        "forced": False,
        "reason": None,
    }
    v.append(
        one(
            "event breaker.opened",
            "event",
            [
                2,
                "event",
                {
                    "sub": 1,
                    "seq": 3,
                    "topic": "breaker.opened",
                    "project": P,
                    "time": T,
                    "data": breaker,
                },
            ],
            "booleans, nil inside data",
        )
    )
    v.append(
        one(
            "event run.log with sub 0",
            "event",
            [
                2,
                "event",
                {
                    "sub": 0,
                    "seq": 1,
                    "topic": "run.log",
                    "project": P,
                    "time": T,
                    "data": {"id": 12, "container": "loki-0123456789ab", "line": "ready"},
                },
            ],
            "run.logs with follow: lines to the requesting connection, no subscription",
        )
    )
    # -- the data of every event topic (PROTOCOL.md 5.1) ------------------------------------
    for n, (topic, data) in enumerate(EVENT_DATA.items(), start=1):
        event = {"sub": 4, "seq": n, "topic": topic, "project": P, "time": T, "data": data}
        v.append(one(f"event data {topic}", "event", [2, "event", event], "PROTOCOL.md 5.1"))
    # -- streams ---------------------------------------------------------------------------
    a = msg([1, 9, None, {"sub": 1}])
    b = msg([2, "event", enqueued])
    v.append(
        stream(
            "a frame split across reads",
            [a[:2], a[2:5], a[5:9], a[9:]],
            [("response", [1, 9, None, {"sub": 1}])],
            note="the header split, then the body",
        )
    )
    v.append(
        stream(
            "one byte per read",
            [a[i : i + 1] for i in range(len(a))],
            [("response", [1, 9, None, {"sub": 1}])],
        )
    )
    v.append(
        stream(
            "two frames in one read",
            [a + b],
            [("response", [1, 9, None, {"sub": 1}]), ("event", [2, "event", enqueued])],
        )
    )
    v.append(
        stream(
            "a frame and a half, then the rest",
            [a + b[:10], b[10:]],
            [("response", [1, 9, None, {"sub": 1}]), ("event", [2, "event", enqueued])],
        )
    )
    v.append(
        stream(
            "a truncated frame at the end",
            [a + b[:10]],
            [("response", [1, 9, None, {"sub": 1}])],
            pending=10,
            note="a connection closed here drops the partial frame",
        )
    )
    v.append(
        stream(
            "an oversized length",
            [struct.pack(">I", LIMIT + 1)],
            [],
            error={"code": "too_large", "length": LIMIT + 1, "limit": LIMIT},
            note="refused from the header alone, before any body arrives",
        )
    )
    v.append(
        stream(
            "an oversized length after a good frame",
            [a, struct.pack(">I", 0xFFFFFFFF) + b"\x00" * 8],
            [("response", [1, 9, None, {"sub": 1}])],
            error={"code": "too_large", "length": 0xFFFFFFFF, "limit": LIMIT},
        )
    )
    small = msg([0, 1, "ping", {}])
    size = len(small) - 4
    v.append(
        stream(
            "a length exactly at a small limit",
            [small],
            [("request", [0, 1, "ping", {}])],
            max_frame=size,
        )
    )
    v.append(
        stream(
            "a length one over a small limit",
            [small],
            [],
            max_frame=size - 1,
            error={"code": "too_large", "length": size, "limit": size - 1},
        )
    )
    # -- bodies that are not messages --------------------------------------------------------
    v.append(stream("body is not msgpack", [frame(b"\xc1")], [("invalid", None)]))
    v.append(stream("empty body", [frame(b"")], [("invalid", None)]))
    v.append(
        stream(
            "body with two values",
            [frame(enc.encode([1, 1, None, {}]) + b"\x01")],
            [("invalid", None)],
            note="a body is exactly one msgpack value",
        )
    )
    v.append(stream("unknown message type", [msg([3, 1, "x", {}])], [("invalid", None)]))
    v.append(stream("not an array", [msg({"msgid": 1})], [("invalid", None)]))
    v.append(
        stream(
            "an invalid body does not end the stream",
            [frame(b"\xc1") + a],
            [("invalid", None), ("response", [1, 9, None, {"sub": 1}])],
        )
    )
    return v


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    doc = {
        "about": "lokid wire vectors: hex bytes beside their meaning. Format: generate.py.",
        "protocol": 1,
        "vectors": vectors(),
    }
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(doc['vectors'])} vectors to {out}")


if __name__ == "__main__":
    main()
