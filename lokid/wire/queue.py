"""Tasks and the queue/dlq methods' params and results.

Task fields use Loki Mode's camelCase names exactly (`rename="camel"`).
Timestamps are ISO-8601 UTC strings.
"""

from typing import Annotated, Any, Literal

import msgspec

from lokid.wire.projects import ProjectParams

State = Literal["pending", "in-progress", "completed", "dead-letter", "cancelled"]
STATES: tuple[str, ...] = State.__args__  # type: ignore[attr-defined]

Priority = Annotated[int, msgspec.Meta(ge=1, le=10)]
PriorityIn = Priority | str  # names are accepted too: critical, high, medium, normal, low
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=30 * 24 * 3600)]
Retries = Annotated[int, msgspec.Meta(ge=0, le=1000)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=1000)]


class TaskResult(msgspec.Struct, rename="camel", forbid_unknown_fields=False):
    decision_report: Any
    status: str = "success"
    output: Any = None


class Task(msgspec.Struct, rename="camel", kw_only=True):
    id: str
    idempotency_key: str
    type: str
    priority: int
    dependencies: list[str]
    payload: dict[str, Any]
    created_at: str
    claimed_by: str | None = None
    claimed_at: str | None = None
    lease_until: str | None = None  # while in progress: when the lease ends (heartbeats move it)
    timeout: float = 3600
    retries: int = 0
    max_retries: int = 3
    backoff_seconds: float = 60
    last_error: str | None = None
    available_at: str | None = None
    completed_at: str | None = None
    result: TaskResult | None = None
    cancelled_at: str | None = None
    cancel_reason: str | None = None


class NewTask(msgspec.Struct, rename="camel", kw_only=True):
    """What a client gives `queue.enqueue`; other keys are kept as extra fields."""

    type: Name = "general"
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    id: Name | None = None
    idempotency_key: Name | None = None
    priority: PriorityIn = 5
    dependencies: list[str] = msgspec.field(default_factory=list)
    timeout: PositiveSeconds = 3600
    max_retries: Retries = 3
    # 0 retries at once (a value users set); at most 30 days, like the other durations.
    backoff_seconds: Annotated[float, msgspec.Meta(ge=0, le=30 * 24 * 3600)] = 60


NEW_TASK_FIELDS = frozenset(f.encode_name for f in msgspec.structs.fields(NewTask))
TASK_FIELDS = frozenset(f.encode_name for f in msgspec.structs.fields(Task))


class EnqueueParams(ProjectParams, kw_only=True):
    task: dict[str, Any]


class EnqueueManyParams(ProjectParams, kw_only=True):
    tasks: Annotated[list[dict[str, Any]], msgspec.Meta(max_length=100_000)]


class Enqueued(msgspec.Struct):
    id: str
    duplicate: bool


class EnqueueManyResult(msgspec.Struct):
    results: list[Enqueued]


class ClaimParams(ProjectParams, kw_only=True):
    agent: Name
    capabilities: Annotated[list[Name], msgspec.Meta(min_length=1, max_length=1000)]
    lease: PositiveSeconds | None = None


class Blocked(msgspec.Struct):
    state: str
    until: str | None


class ClaimResult(msgspec.Struct, omit_defaults=True):
    # A task is a Task, plus any extra fields Loki Mode's files gave it (title, ...);
    # nil when there is nothing to claim. Always present; the rest only when they apply.
    task: Any
    blocked: dict[str, Blocked] | None = None
    paused: bool | None = None
    stopped: bool | None = None


class HeartbeatParams(ProjectParams, kw_only=True):
    id: str
    agent: Name
    lease: PositiveSeconds | None = None


class HeartbeatResult(msgspec.Struct, rename="camel"):
    lease_until: str


class ClaimNext(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`claimNext` of complete/fail: the agent's next claim, in the same transaction."""

    capabilities: Annotated[list[Name], msgspec.Meta(min_length=1, max_length=1000)]
    lease: PositiveSeconds | None = None


class CompleteParams(ProjectParams, kw_only=True):
    id: str
    agent: Name
    result: dict[str, Any]
    claim_next: ClaimNext | None = msgspec.field(default=None, name="claimNext")


class FailParams(ProjectParams, kw_only=True):
    id: str
    agent: Name
    error: Annotated[str, msgspec.Meta(max_length=65536)]
    retry_after: Annotated[float, msgspec.Meta(ge=0, le=24 * 3600)] | None = msgspec.field(
        default=None, name="retryAfter"
    )
    claim_next: ClaimNext | None = msgspec.field(default=None, name="claimNext")


class CancelParams(ProjectParams, kw_only=True):
    id: str
    reason: Annotated[str, msgspec.Meta(max_length=4096)] = "cancelled"


class Cancelled(msgspec.Struct):
    cancelled: list[str]


class IdParams(ProjectParams, kw_only=True):
    id: str


class TaskState(msgspec.Struct, omit_defaults=True):
    task: Any
    state: State
    next: ClaimResult | None = None  # complete/fail with claimNext: what the claim gave


class ListParams(ProjectParams, kw_only=True):
    state: State | None = None
    type: str | None = None
    limit: Limit = 100
    cursor: str | None = None


class TaskPage(msgspec.Struct):
    tasks: list[Any]
    cursor: str | None


class Stats(msgspec.Struct, rename="camel"):
    states: dict[str, int]
    types: dict[str, dict[str, int]]
    blocked_by_dependencies: int
    oldest_pending_age_seconds: float | None


class DlqList(msgspec.Struct):
    tasks: list[Any]


class DlqDecisionParams(ProjectParams, kw_only=True):
    id: str
    note: Annotated[str, msgspec.Meta(max_length=65536)] = ""


class DlqDecision(msgspec.Struct):
    id: str
    action: Literal["retry", "delete"]


class ImportResult(msgspec.Struct):
    imported: int
    skipped: int
    quarantined: str | None = None
