"""Params and results of the breaker.* methods."""

from typing import Annotated, Any

import msgspec

from lokid.wire.queue import ProjectParams

TaskType = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class BreakerTypeParams(ProjectParams, kw_only=True):
    type: TaskType


class TripParams(ProjectParams, kw_only=True):
    type: TaskType
    reason: Annotated[str, msgspec.Meta(max_length=4096)] = "tripped by hand"


class BreakerList(msgspec.Struct):
    # type -> {state, failures, lastFailure, openedAt, halfOpenAt, forced, reason}
    breakers: dict[str, dict[str, Any]]


class BreakerOne(msgspec.Struct):
    type: str
    breaker: dict[str, Any]


class ReloadResult(msgspec.Struct):
    reloaded: bool
    error: str | None = None
