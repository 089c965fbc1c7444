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
    dashboard: dict[str, Any] | None
    events: list[dict[str, Any]]


class Paused(msgspec.Struct):
    paused: bool


class Stopping(msgspec.Struct):
    stopping: bool
