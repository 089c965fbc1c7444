"""Params and results of the breaker.* methods."""

from typing import Annotated

import msgspec

from lokid.wire.projects import ProjectParams

TaskType = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class BreakerTypeParams(ProjectParams, kw_only=True):
    type: TaskType


class TripParams(ProjectParams, kw_only=True):
    type: TaskType
    reason: Annotated[str, msgspec.Meta(max_length=4096)] = "tripped by hand"


class BreakerState(msgspec.Struct, kw_only=True):
    """One type's breaker, as `breaker.list` shows it and its events carry it."""

    state: str  # closed, open, half-open
    failures: int
    last_failure: str | None = msgspec.field(name="lastFailure")
    opened_at: str | None = msgspec.field(name="openedAt")
    # When an open breaker turns half-open (nil when tripped by hand), or when it did.
    half_open_at: str | None = msgspec.field(name="halfOpenAt")
    forced: bool
    reason: str | None


class BreakerList(msgspec.Struct):
    breakers: dict[str, BreakerState]


class BreakerOne(msgspec.Struct):
    type: str
    breaker: BreakerState


class ReloadResult(msgspec.Struct):
    reloaded: bool
    error: str | None = None
