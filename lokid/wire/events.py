"""Every event's data, one Struct per topic (PROTOCOL.md, sections 5 and 6).

The daemon publishes these and clients decode them: the topic is the Struct's `TOPIC`, the
fields are the `data` map. Field names are the wire's: the older events keep the names they
were published with (snake_case in a few run events), new fields are camelCase, and a field's
type never changes. Two families have topics made at run time, from a file name: `signal.<name>`
(`SignalFile`) and `loki.<type>` (Loki Mode's own `events.jsonl` lines, passed through as they
are written).
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from lokid.wire.breakers import BreakerState
from lokid.wire.runs import ImageUpdateResult, RunStartResult


class EventData(msgspec.Struct, kw_only=True):
    """Base of most events' data; `TOPIC` is the event's topic. (A few events reuse a
    method's result type as their data and carry `TOPIC` the same way.)"""

    TOPIC: ClassVar[str] = ""


# -- daemon -----------------------------------------------------------------------------


class Resync(EventData):
    """Events `first`..`last` of this subscription were dropped (the client did not keep up)."""

    TOPIC: ClassVar[str] = "resync"
    dropped: int
    first: int
    last: int


class DaemonStopping(EventData):
    TOPIC: ClassVar[str] = "daemon.stopping"
    pid: int


class ConfigReloaded(EventData):
    TOPIC: ClassVar[str] = "config.reloaded"
    source: str  # "daemon" after SIGHUP, else the file (config/circuit-breakers.yaml)


class ConfigInvalid(EventData):
    TOPIC: ClassVar[str] = "config.invalid"
    error: str


# -- queue ------------------------------------------------------------------------------


class QueueEnqueued(EventData):
    TOPIC: ClassVar[str] = "queue.enqueued"
    id: str
    type: str
    priority: int


class QueueClaimed(EventData):
    TOPIC: ClassVar[str] = "queue.claimed"
    id: str
    type: str
    agent: str


class QueueCompleted(EventData):
    TOPIC: ClassVar[str] = "queue.completed"
    id: str
    type: str
    agent: str


class QueueRetrying(EventData, omit_defaults=True):
    TOPIC: ClassVar[str] = "queue.retrying"
    id: str
    type: str
    retries: int
    available_at: str = msgspec.field(name="availableAt")
    error: str
    rate_limited: bool = msgspec.field(default=False, name="rateLimited")  # only when true


class QueueDeadLettered(EventData):
    TOPIC: ClassVar[str] = "queue.dead-lettered"
    id: str
    type: str
    retries: int
    error: str


class QueueCancelled(EventData):
    TOPIC: ClassVar[str] = "queue.cancelled"
    id: str
    type: str
    reason: str


class QueueLeaseExpired(EventData):
    TOPIC: ClassVar[str] = "queue.lease-expired"
    id: str
    type: str
    agent: str | None


class QueueSlowdown(EventData):
    TOPIC: ClassVar[str] = "queue.slowdown"
    type: str | None  # nil: every type (a RATE_LIMITED signal)
    wait: float  # seconds


class QueueRequeued(EventData):
    TOPIC: ClassVar[str] = "queue.requeued"
    id: str
    type: str


class QueueDeleted(EventData):
    TOPIC: ClassVar[str] = "queue.deleted"
    id: str
    type: str


class QueueStoreLost(EventData):
    """The project's database was deleted or replaced under lokid: the operations that found
    it so were refused (`unavailable`), and the next one starts a new database on disk."""

    TOPIC: ClassVar[str] = "queue.store-lost"
    file: str
    error: str


class QueueQuarantined(EventData):
    TOPIC: ClassVar[str] = "queue.quarantined"
    file: str
    copy: str
    error: str


class QueueResync(EventData):
    """A queue shared with other lokid instances (PostgreSQL): this lokid was cut off from
    the database's notifications, so events made through other instances may be missing;
    re-read the queue. Its views were rewritten from the database."""

    TOPIC: ClassVar[str] = "queue.resync"
    reason: str


# -- breakers ---------------------------------------------------------------------------


class BreakerChanged(BreakerState, kw_only=True):
    """A breaker after a transition; the subclass names the transition."""

    TOPIC: ClassVar[str] = "breaker.*"
    type: str


class BreakerOpened(BreakerChanged, kw_only=True):
    TOPIC: ClassVar[str] = "breaker.opened"


class BreakerHalfOpen(BreakerChanged, kw_only=True):
    TOPIC: ClassVar[str] = "breaker.half-open"


class BreakerClosed(BreakerChanged, kw_only=True):
    TOPIC: ClassVar[str] = "breaker.closed"


class BreakerReset(BreakerChanged, kw_only=True):
    TOPIC: ClassVar[str] = "breaker.reset"


BREAKER_EVENTS: dict[str, type[BreakerChanged]] = {
    t.TOPIC: t for t in (BreakerOpened, BreakerHalfOpen, BreakerClosed, BreakerReset)
}


# -- signals, files and the watcher -----------------------------------------------------


class SignalStop(EventData):
    TOPIC: ClassVar[str] = "signal.stop"
    file: str


class SignalStopDone(EventData):
    """The grace after STOP has passed: `outcome` is `stopped` (lokid stopped `stopped` and
    deleted STOP), `withdrawn` (STOP was gone by then: the run ended by itself, or someone
    withdrew it) or `no-run` (no run lokid manages had started before STOP)."""

    TOPIC: ClassVar[str] = "signal.stop-done"
    stopped: list[str]
    outcome: str = "stopped"


class SignalPause(EventData):
    """`.loki/PAUSE` or `.loki/PAUSE_AT_CHECKPOINT` appeared (`signal.pause`) or went away
    (`signal.resume`)."""

    TOPIC: ClassVar[str] = "signal.pause"
    file: str


class SignalResume(EventData):
    TOPIC: ClassVar[str] = "signal.resume"
    file: str


class SignalFile(EventData):
    """A file in `.loki/signals/` appeared, changed or went away; topic `signal.<name>`."""

    TOPIC: ClassVar[str] = "signal.<name>"
    name: str
    present: bool
    content: Any = None


class PrdChanged(EventData):
    TOPIC: ClassVar[str] = "prd.changed"
    file: str
    source: Any = None
    prd_sha: Any = None
    signature: Any = None
    origin_path: Any = None


class StatusChanged(EventData):
    TOPIC: ClassVar[str] = "status.changed"
    mode: Any = None
    phase: Any = None
    iteration: Any = None
    tasks: dict[str, int] = {}


class ProjectMissing(EventData):
    TOPIC: ClassVar[str] = "project.missing"
    path: str


class ProjectRestored(EventData):
    TOPIC: ClassVar[str] = "project.restored"
    path: str


class ProjectProblem(EventData):
    """lokid cannot use the project's files (`error`), or can again (`error` nil); it keeps
    serving every other project."""

    TOPIC: ClassVar[str] = "project.problem"
    path: str
    error: str | None


# -- runs and images --------------------------------------------------------------------


class ImagePull(EventData):
    TOPIC: ClassVar[str] = "image.pull"
    image: str
    layer: str | None
    status: str
    current: int | None
    total: int | None


class ImagePruned(ImageUpdateResult, kw_only=True):
    TOPIC: ClassVar[str] = "image.pruned"


class RunStarted(RunStartResult, kw_only=True):
    TOPIC: ClassVar[str] = "run.started"


class RunStopped(EventData):
    TOPIC: ClassVar[str] = "run.stopped"
    containers: list[str]


class RunExited(EventData):
    TOPIC: ClassVar[str] = "run.exited"
    container: str
    exit_code: int = msgspec.field(name="exitCode")


class RunAdopted(EventData):
    TOPIC: ClassVar[str] = "run.adopted"
    container: str
    id: str


class RunWarning(EventData):
    TOPIC: ClassVar[str] = "run.warning"
    message: str


class RunLog(EventData, omit_defaults=True):
    """One line of a followed `run.logs` (sub 0, to the asking connection only); the last
    one has `end: true` and the count of `lines` instead of a `line`."""

    TOPIC: ClassVar[str] = "run.log"
    id: int
    container: str
    line: str | None = None
    end: bool = False
    lines: int | None = None


# Every event type with a fixed topic, for documentation and the vectors.
EVENT_TYPES: tuple[type[Any], ...] = (
    Resync,
    DaemonStopping,
    ConfigReloaded,
    ConfigInvalid,
    QueueEnqueued,
    QueueClaimed,
    QueueCompleted,
    QueueRetrying,
    QueueDeadLettered,
    QueueCancelled,
    QueueLeaseExpired,
    QueueSlowdown,
    QueueRequeued,
    QueueDeleted,
    QueueQuarantined,
    QueueStoreLost,
    QueueResync,
    BreakerOpened,
    BreakerHalfOpen,
    BreakerClosed,
    BreakerReset,
    SignalStop,
    SignalStopDone,
    SignalPause,
    SignalResume,
    SignalFile,
    PrdChanged,
    StatusChanged,
    ProjectMissing,
    ProjectRestored,
    ProjectProblem,
    ImagePull,
    ImagePruned,
    RunStarted,
    RunStopped,
    RunExited,
    RunAdopted,
    RunWarning,
    RunLog,
)
