"""Params and results of project.* and signal.*."""

from typing import Any

import msgspec


class ProjectParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The params of every method about one project (and the base of the others')."""

    project: str


class PathParams(msgspec.Struct, forbid_unknown_fields=True):
    path: str


class ProjectInfo(msgspec.Struct, rename="camel"):
    path: str
    name: str
    has_loki: bool
    watched: bool
    missing: bool
    run: Any = None  # run.status's `run`, or nil
    queue: dict[str, int] | None = None  # counts per state, nil without a .loki/ queue
    problem: str | None = None  # why lokid cannot use the project's files now


class ProjectOne(msgspec.Struct):
    project: ProjectInfo


class ProjectList(msgspec.Struct):
    projects: list[ProjectInfo]


class Removed(msgspec.Struct):
    removed: bool


class ProjectStatus(msgspec.Struct, rename="camel"):
    path: str
    name: str
    has_loki: bool
    watched: bool
    missing: bool
    paused: bool
    stopping: bool
    signals: list[str]
    run: Any
    run_error: str | None
    queue: dict[str, int] | None
    breakers: dict[str, Any]
    dashboard: Any
    events: list[dict[str, Any]]
    problem: str | None = None


class Paused(msgspec.Struct):
    paused: bool
    # What a Loki Mode run will make of it (its perpetual mode removes PAUSE).
    note: str


class Resumed(msgspec.Struct):
    paused: bool  # false
    stopped: bool  # false: STOP is cleared too
    cleared: list[str]  # the files removed (PAUSE, lokid/PAUSE, PAUSE_AT_CHECKPOINT, STOP)


class Stopping(msgspec.Struct):
    stopping: bool
