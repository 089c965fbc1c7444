"""Protocol fuzzing against a real daemon: hypothesis feeds it frames no client should send.

Every method named in `hello`'s capabilities gets valid envelopes with params drawn from the
names its params type declares (plus unknown ones) and values of every msgpack type: huge and
negative integers, NaN and infinities, bytes, deep nesting, weird project paths. Then come
broken frames: random bodies, wrong shapes, lying length headers, cut-off frames.

What must hold: the daemon never dies; each request gets a reply or its connection is closed;
no reply is ever `internal` (that is a lokid bug, to be reported with the input); RSS stays
bounded; a bystander client keeps being answered. Bounded by `max_examples` so this file runs
in well under a minute.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reliability_support import CLOSED, SILENT, Bystander, RawConn, frame, rss_kib

from lokictl import DaemonError
from lokid.methods import build_router
from support import Lokid, no_engine, short_tmpdir, wait_until

# Stops the daemon by design; it is exercised by test_lifecycle.py, not fuzzed here.
EXCLUDED = {"daemon.shutdown"}
REPLY_WAIT = 8.0  # a loaded 2-core machine can be slow; a silent daemon after this is a failure
FIRST_WAIT = 1.0
RSS_GROWTH_LIMIT_KIB = 150 * 1024

# A longer hunt: LOKID_FUZZ_SCALE=20 multiplies the examples (the default keeps this file
# well under a minute, as part of `make test`).
SCALE = max(1, int(os.environ.get("LOKID_FUZZ_SCALE", "1")))
SETTINGS = settings(
    max_examples=300 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=False,
)


class Target:
    """The fuzzed daemon, one raw connection to it (reopened when lokid closes it) and a log."""

    def __init__(self, lokid: Lokid, project: Path) -> None:
        self.lokid = lokid
        self.project = project
        self.conn = RawConn(lokid.socket)
        self.msgid = 0
        self.internals: list[tuple[Any, Any]] = []
        self.deaths: list[tuple[Any, str]] = []  # (input, the log's last lines)
        self.last: Any = None

    def reset(self) -> tuple[int, int]:
        """Clear the findings; return the daemon's pid and RSS (KiB) to compare at the end."""
        self.internals.clear()
        self.deaths.clear()
        assert self.lokid.proc is not None
        return self.lokid.proc.pid, rss_kib(self.lokid.proc.pid)

    def alive_or_restarted(self, what: Any) -> None:
        """Record a death with the input that caused it, then restart so the fuzz goes on.

        Failing at the first death would hide every other bug behind the first one found.
        """
        proc = self.lokid.proc
        assert proc is not None
        if proc.poll() is None:
            return
        self.deaths.append((what, self.lokid.log()[-3000:]))
        self.conn.closed = True
        self.lokid.start()

    def ready(self, what: Any) -> None:
        """Before sending `what`: restart lokid if the previous input killed it."""
        wait_until(lambda: not self._dying(), 5, "a closing daemon to exit or stay")
        self.alive_or_restarted(self.last)
        self.last = what

    def fresh(self) -> RawConn:
        if self.conn.closed:
            self.conn.close()
            self.conn = RawConn(self.lokid.socket)
        return self.conn

    def request(self, method: Any, params: Any) -> Any:
        """Send one request; return its reply or CLOSED. Cancel it if it is still running."""
        self.msgid += 1
        self.ready((method, params))
        conn = self.fresh()
        body = msgspec.msgpack.encode([0, self.msgid, method, params])
        if not conn.send(frame(body)):
            return CLOSED
        # Not answered soon: long-running by design (debug.sleep, run.logs follow), or a slow
        # machine. Either way a `$/cancel` must bring an answer (cancelled, or the real one).
        reply = conn.reply_to(self.msgid, FIRST_WAIT)
        if reply == SILENT:
            conn.send(frame(msgspec.msgpack.encode([2, "$/cancel", {"id": self.msgid}])))
            reply = conn.reply_to(self.msgid, REPLY_WAIT)
        self.check(reply, (method, params))
        return reply

    def _dying(self) -> bool:
        """True while the socket is gone but the process has not exited yet."""
        proc = self.lokid.proc
        return proc is not None and proc.poll() is None and not self.lokid.socket.exists()

    def check(self, reply: Any, what: Any) -> None:
        assert reply != SILENT, f"no reply and no close for {what!r}"
        if reply == CLOSED and not self._pings():
            assert self.lokid.proc is not None
            self.lokid.proc.wait(20)  # closed and not answering: it is on its way out
        self.alive_or_restarted(what)
        if isinstance(reply, list) and len(reply) == 4 and isinstance(reply[2], dict):
            assert set(reply[2]) >= {"code", "message"}, reply
            if reply[2]["code"] == "internal":
                self.internals.append((what, reply[2]))

    def _pings(self) -> bool:
        """A close is a legal answer, but it is also how a crash looks: ask a fresh connection."""
        try:
            return bool(self.lokid.call("ping"))
        except Exception:
            return False


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    root = short_tmpdir("lkf-")
    project = root / "proj"
    (project / ".loki").mkdir(parents=True)
    # No engine: run.*/image.* must answer `unavailable`, never hang or crash.
    lokid = Lokid(root, env={"LOKID_LOG_LEVEL": "info", **no_engine(root)}).start()
    lokid.call(
        "queue.enqueue_many",
        {
            "project": str(project),
            "tasks": [{"id": f"t{i}", "type": "eng", "payload": {"i": i}} for i in range(20)],
        },
    )
    t = Target(lokid, project)
    try:
        yield t
    finally:
        t.conn.close()
        lokid.kill()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def alive(target: Target) -> None:
    """Each test starts with a live daemon, whatever the previous one did to it."""
    target.ready(None)


def method_fields() -> dict[str, list[str]]:
    """Each served method's param names as they travel on the wire."""
    out = {}
    for name, method in build_router().methods.items():
        try:
            fields = msgspec.structs.fields(method.params)
        except TypeError:
            fields = ()
        out[name] = [f.encode_name for f in fields]
    return out


FIELDS = method_fields()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]),
    st.text(max_size=40),
    st.binary(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)


def deep_ping(n: int) -> bytes:
    """A ping whose params nest `n` arrays deep, built by hand (msgspec will not encode it)."""
    head = bytes([0x94, 0x00, 0x01, 0xA4]) + b"ping" + bytes([0x81, 0xA1]) + b"x"
    return head + b"\x91" * n + b"\x01"


def not_absolute(value: Any) -> bool:
    """Random absolute paths could name real folders (`/`), where lokid would make a .loki."""
    return not (isinstance(value, str | bytes) and value[:1] in ("/", b"/"))


def paths(project: Path) -> st.SearchStrategy[Any]:
    """Project paths a careless or hostile client might send; all inside the test's folder."""
    p = str(project)
    return st.one_of(
        st.just(p),
        st.sampled_from(
            [
                p + "/",
                p + "/../proj",
                p + "//x",
                p + "/./x",
                p + "/missing",
                p + "/.loki",
                "proj",
                "",
                p + "/\x00x",
                p.encode() + b"/\xff\xfe",
            ]
        ),
        values.filter(not_absolute),
    )


def plausible(name: str, project: Path) -> st.SearchStrategy[Any]:
    """A value for param `name`: often right-shaped, so the fuzz reaches past validation."""
    by_name: dict[str, st.SearchStrategy[Any]] = {
        "project": paths(project),
        "path": paths(project),
        "id": st.one_of(st.sampled_from(["t0", "t1", "t19", "nope"]), values),
        "agent": st.one_of(st.sampled_from(["a", "b"]), values),
        "capabilities": st.one_of(st.just(["eng"]), st.lists(values, max_size=3), values),
        "task": st.one_of(
            st.fixed_dictionaries({"type": st.just("eng")}, optional={"payload": values}),
            st.dictionaries(st.text(max_size=15), values, max_size=6),
            values,
        ),
        "tasks": st.lists(st.dictionaries(st.text(max_size=10), values, max_size=4), max_size=5),
        "topics": st.one_of(st.just(["*"]), st.lists(st.text(max_size=10), max_size=3), values),
        "seconds": st.one_of(st.floats(min_value=0, max_value=0.2), values),
        "result": st.one_of(st.just({"decisionReport": "x"}), values),
        "claimNext": st.one_of(
            st.fixed_dictionaries({"capabilities": st.just(["eng"])}, optional={"lease": values}),
            values,
        ),
    }
    if name in ("project", "path"):
        return paths(project)
    return st.one_of(by_name.get(name, values), values)


@st.composite
def valid_requests(draw: st.DrawFn, project: Path) -> tuple[str, Any]:
    method = draw(st.sampled_from(sorted(set(FIELDS) - EXCLUDED)))
    names = FIELDS[method]
    chosen = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    params: dict[Any, Any] = {n: draw(plausible(n, project)) for n in chosen}
    if draw(st.integers(0, 9)) == 0:  # sometimes an unknown or non-string key
        params[
            draw(
                st.one_of(
                    st.text(max_size=8), st.integers(-(2**63), 2**64 - 1), st.binary(max_size=4)
                )
            )
        ] = 1
    return method, params


def test_capabilities_are_the_methods_fuzzed(target):
    """The fuzz covers what the daemon says it serves, no less."""
    caps = set(target.lokid.call("hello")["capabilities"])
    assert caps == set(FIELDS), caps ^ set(FIELDS)


def test_random_params_to_every_method(target):
    pid, before = target.reset()
    with Bystander(target.lokid.socket) as bystander:
        run_valid_envelopes(target)
    verdict(target, bystander, pid, before)


def run_valid_envelopes(target: Target) -> None:
    @settings(SETTINGS, max_examples=1000 * SCALE)  # cheap: ~5 ms each
    @given(req=valid_requests(target.project))
    def fuzz(req: tuple[str, Any]) -> None:
        method, params = req
        reply = target.request(method, params)
        if reply != CLOSED:
            assert reply[0] == 1 and reply[1] == target.msgid, reply

    fuzz()


envelopes = st.one_of(
    values,  # any value at all as the body
    st.tuples(st.integers(-3, 5), values, values, values).map(list),
    st.tuples(st.just(0), values, st.text(max_size=20), values).map(list),
    st.tuples(st.just(0), st.integers(0, 2**32), values, values).map(list),
    st.tuples(st.just(2), values, values).map(list),
    st.lists(values, max_size=8),
)


def test_wrong_shapes_random_bodies_and_deep_nesting(target):
    pid, before = target.reset()
    with Bystander(target.lokid.socket) as bystander:
        run_bad_bodies(target)
        for depth in (10, 100, 500, 1000, 100_000):  # 1,000 killed lokid (bug 3, fixed)
            send_and_expect_answer(target, frame(deep_ping(depth)), f"nesting {depth}")
    verdict(target, bystander, pid, before)


def verdict(target: Target, bystander: Bystander, pid: int, rss_before: int) -> None:
    """Fail on any `internal` reply or any death, naming the input that caused it.

    Deaths are recorded (and lokid restarted) rather than failing at once, so one run shows
    every crashing input, not only the first.
    """
    assert not target.internals, f"`internal` replies (lokid bugs): {target.internals[:3]!r:.2000}"
    if target.deaths:
        what, log = target.deaths[0]
        raise AssertionError(f"lokid died {len(target.deaths)}x, first on {what!r:.500}:\n{log}")
    assert not bystander.failures and bystander.pings > 0, bystander.failures
    assert bystander.worst < 5, f"a bystander waited {bystander.worst:.1f}s for a ping"
    assert rss_kib(pid) - rss_before < RSS_GROWTH_LIMIT_KIB


def run_bad_bodies(target: Target) -> None:
    @SETTINGS
    @given(
        body=st.one_of(
            envelopes.map(msgspec.msgpack.encode),
            st.binary(max_size=200),
            envelopes.map(msgspec.msgpack.encode).flatmap(mutated),
        )
    )
    def fuzz(body: bytes) -> None:
        send_and_expect_answer(target, frame(body), body)

    fuzz()


def mutated(body: bytes) -> st.SearchStrategy[bytes]:
    """`body` with a few bytes flipped, cut short or extended."""
    if not body:
        return st.just(b"\xc1")
    index = st.integers(0, len(body) - 1)
    return st.one_of(
        st.tuples(index, st.integers(0, 255)).map(
            lambda t: body[: t[0]] + bytes([t[1]]) + body[t[0] + 1 :]
        ),
        index.map(lambda i: body[:i]),
        st.binary(min_size=1, max_size=8).map(lambda extra: body + extra),
    )


def send_and_expect_answer(target: Target, data: bytes, what: Any) -> None:
    """Anything sent in one whole frame is answered or closed; a notification may be ignored.

    Each probe gets its own connection so a close (a legal answer) never hides the next one.
    A ping after the probe shows whether the connection still reads frames.
    """
    target.ready(what)
    conn = RawConn(target.lokid.socket)
    try:
        if not conn.send(data):
            return
        ping_id = 2**31 - 7
        conn.send(frame(msgspec.msgpack.encode([0, ping_id, "ping", {}])))
        while True:
            msg = conn.read(REPLY_WAIT)
            target.check(msg, what)
            if msg == CLOSED or (isinstance(msg, list) and msg[:2] == [1, ping_id]):
                return
    finally:
        conn.close()


@pytest.mark.parametrize(
    "header",
    [
        b"\xff\xff\xff\xff",  # 4 GiB announced
        (16 * 1024 * 1024 + 1).to_bytes(4, "big"),  # one over the limit
    ],
)
def test_lying_length_headers_get_too_large_then_close(target, header):
    conn = RawConn(target.lokid.socket)
    try:
        conn.send(header + b"\x90")
        reply = conn.read(REPLY_WAIT)
        assert reply[:2] == [1, None] and reply[2]["code"] == "too_large", reply
        assert conn.read(REPLY_WAIT) == CLOSED
    finally:
        conn.close()
    assert target.lokid.call("ping")


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 50])
def test_a_frame_cut_short_then_closed_is_dropped(target, cut):
    body = msgspec.msgpack.encode([0, 1, "queue.enqueue", {"project": str(target.project)}])
    conn = RawConn(target.lokid.socket)
    conn.send(cut_frame(body, cut))
    conn.close()
    assert target.lokid.call("ping")


def cut_frame(body: bytes, cut: int) -> bytes:
    return frame(body + b"\x00" * 100)[:cut]


def test_many_requests_in_flight_on_one_connection_then_a_hang_up(target):
    """64+ requests in flight, never read, then the client vanishes: lokid carries on."""
    conn = RawConn(target.lokid.socket)
    burst = b"".join(
        frame(msgspec.msgpack.encode([0, i, "debug.sleep", {"seconds": 0.5}])) for i in range(200)
    )
    conn.sock.settimeout(2)
    # A timeout is backpressure: lokid stopped reading this connection (PROTOCOL.md 3.3).
    with contextlib.suppress(TimeoutError, OSError):
        conn.sock.sendall(burst)
    conn.close()
    assert target.lokid.call("ping")
    assert target.lokid.proc.poll() is None


# Regression inputs of bugs 1-3 (found by this file, fixed in 8ea953e): each killed lokid.
INVALID_UTF8 = {
    "method": bytes([0x94, 0x00, 0x01, 0xA1, 0xFF, 0x80]),
    "param key": bytes([0x94, 0x00, 0x01, 0xA4]) + b"ping" + bytes([0x81, 0xA1, 0xFF, 0x01]),
    "param value": bytes([0x94, 0x00, 0x01, 0xA9])
    + b"queue.get"
    + bytes([0x82, 0xA7])
    + b"project"
    + bytes([0xA1, 0xFF, 0xA2])
    + b"id"
    + bytes([0xA1])
    + b"x",
    "notification": bytes([0x93, 0x02, 0xA1, 0xFF, 0x80]),
}


@pytest.mark.parametrize("where", sorted(INVALID_UTF8))
def test_invalid_utf8_strings_never_kill_lokid(tmp_short, where):
    """A str that is not UTF-8 is a parse or params error for that request, nothing more."""
    lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "info"}).start()
    try:
        conn = RawConn(lokid.socket)
        conn.send(frame(INVALID_UTF8[where]))
        reply = conn.read(REPLY_WAIT)
        conn.close()
        assert lokid.call("ping"), "lokid must still answer"
        assert isinstance(reply, list), reply
        assert reply[2]["code"] in {"parse_error", "invalid_request", "invalid_params"}, reply
    finally:
        lokid.kill()


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deep_nesting_never_kills_lokid(tmp_short, depth):
    """A 1 KB frame nested 1,000 deep used to end lokid with a RecursionError."""
    lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "info"}).start()
    try:
        conn = RawConn(lokid.socket)
        conn.send(frame(deep_ping(depth)))
        reply = conn.read(REPLY_WAIT)
        conn.close()
        assert lokid.call("ping"), "lokid must still answer"
        assert reply == CLOSED or reply[2]["code"] in {"parse_error", "invalid_request"}, reply
    finally:
        lokid.kill()


@pytest.mark.parametrize("method", ["queue.stats", "dlq.list", "breaker.list", "queue.list"])
def test_a_too_long_project_path_is_a_clear_error(target, method):
    """ENAMETOOLONG from the stat of the project folder used to answer `internal`."""
    with pytest.raises(DaemonError) as err:
        target.lokid.call(method, {"project": str(target.project) + "/" + "a" * 5000})
    assert err.value.code in {"invalid_params", "not_found"}, err.value


def test_every_method_cancelled_at_once(target):
    """Each request chased by its own `$/cancel`: an answer always comes (cancelled or the real
    one), never `internal`, and the daemon's state stays readable."""
    pid, before = target.reset()

    @settings(SETTINGS, max_examples=200 * SCALE)
    @given(req=valid_requests(target.project))
    def fuzz(req: tuple[str, Any]) -> None:
        method, params = req
        target.msgid += 1
        target.ready(req)
        conn = target.fresh()
        request = frame(msgspec.msgpack.encode([0, target.msgid, method, params]))
        cancel = frame(msgspec.msgpack.encode([2, "$/cancel", {"id": target.msgid}]))
        if conn.send(request + cancel):
            target.check(conn.reply_to(target.msgid, REPLY_WAIT), req)

    with Bystander(target.lokid.socket) as bystander:
        fuzz()
        stats = target.lokid.call("queue.stats", {"project": str(target.project)})
    assert set(stats["states"]) == {
        "pending",
        "in-progress",
        "completed",
        "dead-letter",
        "cancelled",
    }
    verdict(target, bystander, pid, before)
