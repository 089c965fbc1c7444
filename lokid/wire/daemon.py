"""Params and results of the daemon-level methods and the event notification."""

from typing import Any

import msgspec


class HelloParams(msgspec.Struct, forbid_unknown_fields=True):
    client: str = "unknown"
    protocol: int = 1


class HelloResult(msgspec.Struct):
    server: str
    version: str
    protocol: int
    capabilities: list[str]
    pid: int


class Empty(msgspec.Struct, forbid_unknown_fields=True):
    pass


class PingResult(msgspec.Struct):
    time: str


class StatusResult(msgspec.Struct):
    version: str
    pid: int
    uptime_s: float
    connections: int
    projects: list[str]


class InfoDocker(msgspec.Struct):
    endpoint: str  # the engine runs go to
    source: str  # why that one: "DOCKER_HOST", "context <name>", or "default"


class InfoProject(msgspec.Struct, rename="camel"):
    path: str
    watched: bool
    missing: bool
    has_loki: bool
    problem: str | None  # what stops lokid from serving it, in words


class InfoResult(msgspec.Struct, rename="camel"):
    """daemon.info: where this lokid keeps things and what it was started with."""

    version: str
    pid: int
    uptime_s: float
    socket: str
    log_file: str | None  # the file lokid's stderr goes to, nil for a terminal or journal
    state_dir: str
    docker: InfoDocker | None  # nil when containers are off
    environment: dict[str, str]  # lokid's DOCKER_HOST, DOCKER_CONTEXT, LOKI_DOCKER_IMAGE
    projects: list[InfoProject]


class ShutdownResult(msgspec.Struct):
    stopping: bool


class SubscribeParams(msgspec.Struct, forbid_unknown_fields=True):
    topics: list[str] = msgspec.field(default_factory=lambda: ["*"])
    project: str | None = None


class SubscribeResult(msgspec.Struct):
    sub: int


class UnsubscribeParams(msgspec.Struct, forbid_unknown_fields=True):
    sub: int


class UnsubscribeResult(msgspec.Struct):
    removed: bool


class CancelNoticeParams(msgspec.Struct):
    """Params of the `$/cancel` client notification (not `queue.cancel`'s)."""

    id: int


class Event(msgspec.Struct):
    """Params of the `event` notification the daemon sends a subscriber."""

    sub: int
    seq: int
    topic: str
    project: str | None
    time: str
    data: Any = None


class SleepParams(msgspec.Struct, forbid_unknown_fields=True):
    seconds: float = msgspec.field(default=1.0)


class SleepResult(msgspec.Struct):
    slept: float
