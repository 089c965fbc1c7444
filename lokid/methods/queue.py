"""queue.*, dlq.* and breaker.*: thin handlers over each project's `Queue`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import trio

from lokid.errors import NotFound
from lokid.files import signals
from lokid.files.decisions import append_dlq_decision
from lokid.projects import Project, Projects
from lokid.queue.area import QueueArea
from lokid.queue.core import Claim, Prepared, Queue
from lokid.queue.unit import batch_memo
from lokid.server.dispatch import Call, Router
from lokid.wire.breakers import (
    BreakerList,
    BreakerOne,
    BreakerTypeParams,
    ReloadResult,
    TripParams,
)
from lokid.wire.projects import ProjectParams
from lokid.wire.queue import (
    STATES,
    Cancelled,
    CancelParams,
    ClaimParams,
    ClaimResult,
    CompleteParams,
    DlqDecision,
    DlqDecisionParams,
    DlqList,
    Enqueued,
    EnqueueManyParams,
    EnqueueManyResult,
    EnqueueParams,
    FailParams,
    HeartbeatParams,
    HeartbeatResult,
    IdParams,
    ImportResult,
    ListParams,
    Stats,
    TaskPage,
    TaskState,
)
from lokid.wire.times import iso


class QueueApp(Protocol):
    projects: Projects
    queues: QueueArea


router = Router()
QCall = Call[QueueApp]


def _queue(call: QCall, project: str) -> Queue:
    """The project's queue, created if need be: for operations that write."""
    return call.app.queues.open(call.app.projects.use(project))


def _existing(call: QCall, project: str) -> Queue | None:
    """The project's queue if it has one: reads (and operations on tasks that would have to
    exist) never create a database, nor anything else in the project."""
    return call.app.queues.existing(call.app.projects.peek(project))


def _with_task(call: QCall, project: str, task_id: str) -> Queue:
    queue = _existing(call, project)
    if queue is None:
        raise NotFound(f"no task {task_id!r} in {project}")
    return queue


@router.method("queue.enqueue", EnqueueParams, batch=True)
def enqueue(call: QCall, p: EnqueueParams) -> Enqueued:
    return _queue(call, p.project).enqueue(p.task)


# Tasks of an enqueue_many handled between two turns of the event loop: ~10-30 ms of work,
# so no other client waits long behind a big batch (issue 15, item 9).
ENQUEUE_CHUNK = 1000


@router.method("queue.enqueue_many", EnqueueManyParams, inline=True)
async def enqueue_many(call: QCall, p: EnqueueManyParams) -> EnqueueManyResult:
    """All or nothing, in one transaction. A big batch is parsed, then written, in chunks
    with the event loop turning between them: other clients and projects are served
    meanwhile, while this project's other requests wait for the commit (one writer per
    project: anything else would join the batch's transaction or read it half-written)."""
    project = call.app.projects.use(p.project)
    prepared: list[Prepared] = []
    for start in range(0, len(p.tasks), ENQUEUE_CHUNK):
        if start:
            await trio.sleep(0)
        prepared += Queue.prepare_one_chunk(p.tasks[start : start + ENQUEUE_CHUNK], start)
    async with call.app.queues.bulk(project) as queue:
        if len(prepared) <= ENQUEUE_CHUNK:
            return EnqueueManyResult(queue.add_prepared(prepared))
        return EnqueueManyResult(await queue.add_in_chunks(prepared, ENQUEUE_CHUNK))


def _halted(project: Project) -> ClaimResult | None:
    """A claim's answer while the project is stopped or paused.

    Read from disk, not from the watcher's last news: never a claim after STOP/PAUSE. The
    claims of one batch share one look (they happen at one moment, before one commit).
    """
    memo = batch_memo()
    key = ("halted", project.path)
    if memo is not None and key in memo:
        return memo[key]
    halted = None
    if signals.is_stopping(project.loki):
        halted = ClaimResult(task=None, stopped=True)
    elif signals.is_paused(project.loki):
        halted = ClaimResult(task=None, paused=True)
    if memo is not None:
        memo[key] = halted
    return halted


def _outcome(
    call: QCall, p: CompleteParams | FailParams, act: Callable[[Queue, Claim | None], TaskState]
) -> TaskState:
    """complete/fail, with `claimNext` made the claim to make, or answered instead of
    one while the project is stopped or paused (the outcome itself still happens)."""
    project = call.app.projects.use(p.project)
    halted = then = None
    if p.claim_next is not None:
        halted = _halted(project)
        if halted is None:
            then = Claim(p.agent, p.claim_next.capabilities, p.claim_next.lease)
    state = act(_with_task(call, p.project, p.id), then)
    state.next = state.next or halted
    return state


@router.method("queue.claim", ClaimParams, batch=True)
def claim(call: QCall, p: ClaimParams) -> ClaimResult:
    project = call.app.projects.use(p.project)
    halted = _halted(project)
    if halted is not None:
        return halted
    queue = call.app.queues.existing(project)
    if queue is None:
        return ClaimResult(task=None)  # no queue yet, so nothing to claim
    return queue.claim(p.agent, p.capabilities, p.lease)


@router.method("queue.heartbeat", HeartbeatParams, batch=True)
def heartbeat(call: QCall, p: HeartbeatParams) -> HeartbeatResult:
    until = _with_task(call, p.project, p.id).heartbeat(p.id, p.agent, p.lease)
    return HeartbeatResult(iso(until))


@router.method("queue.complete", CompleteParams, batch=True)
def complete(call: QCall, p: CompleteParams) -> TaskState:
    return _outcome(call, p, lambda queue, then: queue.complete(p.id, p.agent, p.result, then))


@router.method("queue.fail", FailParams, batch=True)
def fail(call: QCall, p: FailParams) -> TaskState:
    return _outcome(
        call, p, lambda queue, then: queue.fail(p.id, p.agent, p.error, p.retry_after, then)
    )


@router.method("queue.cancel", CancelParams, batch=True)
def cancel(call: QCall, p: CancelParams) -> Cancelled:
    return Cancelled(_with_task(call, p.project, p.id).cancel(p.id, p.reason))


@router.method("queue.get", IdParams, batch=True)
def get(call: QCall, p: IdParams) -> TaskState:
    return _with_task(call, p.project, p.id).get(p.id)


@router.method("queue.list", ListParams, batch=True)
def list_tasks(call: QCall, p: ListParams) -> TaskPage:
    queue = _existing(call, p.project)
    if queue is None:
        return TaskPage([], None)
    tasks, cursor = queue.page(p.state, p.type, p.limit, p.cursor)
    return TaskPage(tasks, cursor)


@router.method("queue.stats", ProjectParams, batch=True)
def stats(call: QCall, p: ProjectParams) -> Stats:
    queue = _existing(call, p.project)
    return queue.stats() if queue is not None else Stats(dict.fromkeys(STATES, 0), {}, 0, None)


@router.method("queue.import", ProjectParams)
async def import_pending(call: QCall, p: ProjectParams) -> ImportResult:
    project = call.app.projects.use(p.project)
    imported, skipped, copy = await call.app.queues.views(project).import_now()
    return ImportResult(imported, skipped, copy)


@router.method("dlq.list", ProjectParams, batch=True)
def dlq_list(call: QCall, p: ProjectParams) -> DlqList:
    queue = _existing(call, p.project)
    return DlqList(queue.dlq_list() if queue is not None else [])


@router.method("dlq.retry", DlqDecisionParams)
async def dlq_retry(call: QCall, p: DlqDecisionParams) -> DlqDecision:
    task = _with_task(call, p.project, p.id).dlq_retry(p.id)
    await _log_decision(call, p, "retry", task.type, task.last_error)
    return DlqDecision(p.id, "retry")


@router.method("dlq.delete", DlqDecisionParams)
async def dlq_delete(call: QCall, p: DlqDecisionParams) -> DlqDecision:
    task = _with_task(call, p.project, p.id).dlq_delete(p.id)
    await _log_decision(call, p, "delete", task.type, task.last_error)
    return DlqDecision(p.id, "delete")


async def _log_decision(
    call: QCall, p: DlqDecisionParams, action: str, task_type: str, error: str | None
) -> None:
    """Append to `.loki/logs/decisions/dlq-review-<date>.md`, as the reference asks."""
    project = call.app.projects.use(p.project)
    await trio.to_thread.run_sync(
        append_dlq_decision, project.loki, time.time(), p.id, action, task_type, error, p.note
    )


@router.method("breaker.list", ProjectParams, batch=True)
def breaker_list(call: QCall, p: ProjectParams) -> BreakerList:
    queue = _existing(call, p.project)
    if queue is None:
        return BreakerList({})
    with queue.transaction():
        return BreakerList(queue.breakers.listing(queue.clock()))


@router.method("breaker.reset", BreakerTypeParams, batch=True)
def breaker_reset(call: QCall, p: BreakerTypeParams) -> BreakerOne:
    queue = _queue(call, p.project)
    with queue.transaction():
        return BreakerOne(p.type, queue.breakers.reset(p.type))


@router.method("breaker.trip", TripParams, batch=True)
def breaker_trip(call: QCall, p: TripParams) -> BreakerOne:
    queue = _queue(call, p.project)
    with queue.transaction():
        return BreakerOne(p.type, queue.breakers.trip(p.type, queue.clock(), p.reason))


@router.method("breaker.reload", ProjectParams)
def breaker_reload(call: QCall, p: ProjectParams) -> ReloadResult:
    error = call.app.queues.reload_project(call.app.projects.use(p.project))
    return ReloadResult(error is None, error)
