"""Params and results of run.* and image.* (PROTOCOL.md, "Runs and images")."""

import msgspec


class RunStartParams(msgspec.Struct, forbid_unknown_fields=True):
    project: str
    # The command given to the image's `loki` entrypoint.
    args: list[str] = msgspec.field(default_factory=lambda: ["start"])
    # Else LOKI_DOCKER_IMAGE in lokid's environment, else asklokesh/loki-mode:latest.
    image: str | None = None
    # Deprecated: accepted (old clients send it) and ignored; `true` adds a warning. The
    # container's dashboard is always off and no port is published: Loki Mode's dashboard on
    # the host lists the run (PROTOCOL.md 6.6).
    api: bool = False
    # Extra container environment; ANTHROPIC_API_KEY, GITHUB_TOKEN, GH_TOKEN here win over
    # lokid's own environment.
    env: dict[str, str] = {}
    # False skips pull and prune for this start (as LOKI_DOCKER_PRUNE=0 does for all).
    pull: bool | None = None


class RunStartResult(msgspec.Struct):
    container: str
    id: str
    image: str
    image_id: str
    # Deprecated: always None (no port is published); kept for clients that read it.
    port: int | None
    started_at: str
    pulled: bool
    warnings: list[str]


class RunStopParams(msgspec.Struct, forbid_unknown_fields=True):
    project: str | None = None
    all: bool = False
    # Seconds between SIGTERM and SIGKILL; else lokid's setting (LOKID_STOP_GRACE, 10).
    grace: float | None = None


class RunStopResult(msgspec.Struct):
    # Containers that were running and are now stopped and removed.
    stopped: list[str]
    # Containers that had already exited and were only removed.
    removed: list[str]


class RunInfo(msgspec.Struct):
    project: str | None
    container: str
    id: str
    image: str
    state: str  # the engine's: created, running, exited, ...
    started_at: str | None
    port: int | None
    exit_code: int | None
    managed: bool


class RunStatusResult(msgspec.Struct):
    run: RunInfo | None


class RunListResult(msgspec.Struct):
    runs: list[RunInfo]


class RunLogsParams(msgspec.Struct, forbid_unknown_fields=True):
    project: str
    # Last lines only; None means all of them.
    tail: int | None = None
    # Stream new lines as `run.log` events to this connection until the container ends.
    follow: bool = False


class RunLogsResult(msgspec.Struct):
    container: str
    # The lines (without follow); with follow they went out as events and this is empty.
    lines: list[str]
    streamed: int


class ImageUpdateParams(msgspec.Struct, forbid_unknown_fields=True):
    image: str | None = None


class RemovedImage(msgspec.Struct):
    id: str
    tags: list[str]
    size: int


class FailedRemoval(msgspec.Struct):
    id: str
    error: str


class ImageUpdateResult(msgspec.Struct):
    image: str
    id: str
    removed: list[RemovedImage]
    failed: list[FailedRemoval]
    kept_in_use: list[str]
    reclaimed_bytes: int
    message: str
