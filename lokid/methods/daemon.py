"""hello, ping, daemon.status, daemon.shutdown, subscribe, unsubscribe."""

import time

import trio

from lokid.errors import InvalidParams, NotFound
from lokid.server.dispatch import Call, Router
from lokid.wire.daemon import (
    Empty,
    HelloParams,
    HelloResult,
    PingResult,
    ShutdownResult,
    SleepParams,
    SleepResult,
    StatusResult,
    SubscribeParams,
    SubscribeResult,
    UnsubscribeParams,
    UnsubscribeResult,
)
from lokid.wire.messages import PROTOCOL_VERSION
from lokid.wire.times import iso

router = Router()


@router.method("hello", HelloParams)
def hello(call: Call, params: HelloParams) -> HelloResult:
    if params.protocol != PROTOCOL_VERSION:
        raise InvalidParams(
            f"this lokid speaks protocol {PROTOCOL_VERSION}; "
            f"the client asked for {params.protocol}",
            {"protocol": PROTOCOL_VERSION},
        )
    call.conn.client = params.client
    return HelloResult(
        server="lokid",
        version=call.daemon.version,
        protocol=PROTOCOL_VERSION,
        capabilities=sorted(call.daemon.router.methods),
        pid=call.daemon.pid,
    )


@router.method("ping", Empty)
def ping(call: Call, params: Empty) -> PingResult:
    return PingResult(time=iso(time.time()))


@router.method("daemon.status", Empty)
def status(call: Call, params: Empty) -> StatusResult:
    daemon = call.daemon
    return StatusResult(
        version=daemon.version,
        pid=daemon.pid,
        uptime_s=round(daemon.uptime, 3),
        connections=len(daemon.connections),
        projects=daemon.project_paths(),
    )


@router.method("daemon.shutdown", Empty)
def shutdown(call: Call, params: Empty) -> ShutdownResult:
    call.daemon.request_shutdown(f"asked by connection {call.conn.id} ({call.conn.client})")
    return ShutdownResult(stopping=True)


@router.method("subscribe", SubscribeParams)
def subscribe(call: Call, params: SubscribeParams) -> SubscribeResult:
    if not params.topics or not all(params.topics):
        raise InvalidParams("subscribe: topics must be a non-empty list of non-empty globs")
    sub = call.daemon.hub.subscribe(call.conn, params.topics, params.project)
    return SubscribeResult(sub=sub.id)


@router.method("unsubscribe", UnsubscribeParams)
def unsubscribe(call: Call, params: UnsubscribeParams) -> UnsubscribeResult:
    if not call.daemon.hub.unsubscribe(call.conn, params.sub):
        raise NotFound(f"no subscription {params.sub} on this connection")
    return UnsubscribeResult(removed=True)


MAX_SLEEP = 300.0


@router.method("debug.sleep", SleepParams)
async def debug_sleep(call: Call, params: SleepParams) -> SleepResult:
    """Answer after a while: lets clients test concurrency, cancellation and timeouts."""
    if not 0 <= params.seconds <= MAX_SLEEP:
        raise InvalidParams(f"debug.sleep: seconds must be between 0 and {MAX_SLEEP:g}")
    start = time.monotonic()
    await trio.sleep(params.seconds)
    return SleepResult(slept=round(time.monotonic() - start, 3))
