"""The lokid tools: one per socket method an agent needs, typed by the wire's Structs.

Each tool sends its arguments to lokid as that method's params, with `project` (and,
where the method takes one, `agent`) filled in when the agent left them out; lokid
validates them exactly as it does lokictl's, and its reply is the tool's structured
result. The descriptions are the agent's documentation: they teach it to work a lease.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
import msgspec

from lokid.mcp import schemas
from lokid.mcp.errors import BadArguments
from lokid.mcp.project import Projects
from lokid.wire import breakers, projects, queue, runs

LEASE_GUIDE = (
    "Working a task: (1) queue_claim with the task types you can do; you then hold the "
    "task's lease for its `timeout` seconds (or the `lease` you ask for). (2) While you "
    "work, call queue_heartbeat well before the lease runs out (every third of it is "
    "safe): a lease that runs out counts as a failed attempt and the task goes to "
    "another agent. (3) Finish with queue_complete and a non-empty result.decisionReport "
    "(what you did and why, the evidence), or with queue_fail and the error text exactly "
    "as you got it: rate-limit texts (429, 'rate limit', 'retry-after: 30', 'quota "
    "exceeded') are detected, and the task then waits without counting an attempt. "
    "(4) Put claimNext in complete or fail to get your next task in the same call."
)


@dataclass(frozen=True)
class ToolSpec:
    """A tool and the lokid method behind it."""

    name: str
    method: str
    params: type[msgspec.Struct]
    result: type[msgspec.Struct]
    description: str
    described: dict[str, str] = field(default_factory=dict)
    omit: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    read_only: bool = False
    destructive: bool = False

    @property
    def takes_agent(self) -> bool:
        return any(f.encode_name == "agent" for f in msgspec.structs.fields(self.params))

    def tool(self, projects: Projects, agent: str) -> types.Tool:
        described = {"project": _project_text(projects), **self.described}
        optional = ["project"]
        if self.takes_agent:
            described["agent"] = (
                f"your agent name; leases are held under it (default: {agent}, this "
                "session's). Use the same name for a task's claim, heartbeats and completion"
            )
            optional.append("agent")
        return types.Tool(
            name=self.name,
            description=self.description,
            input_schema=schemas.input_schema(
                self.params, optional=optional, omit=self.omit, described=described
            ),
            output_schema=schemas.output_schema(self.result),
            annotations=types.ToolAnnotations(
                read_only_hint=self.read_only,
                destructive_hint=self.destructive,
                open_world_hint=False,
            ),
        )

    def params_for(self, arguments: dict[str, Any], projects: Projects, agent: str) -> dict:
        """The method's params: the agent's arguments, the defaults filled in."""
        left_out = sorted(set(arguments) & set(self.omit))
        if left_out:
            raise BadArguments(f"{self.name} does not take {', '.join(left_out)}")
        params = {**self.defaults, **arguments}
        params["project"] = projects.resolve(params.pop("project", None))
        if self.takes_agent and params.get("agent") is None:
            params["agent"] = agent
        return params


def _project_text(projects: Projects) -> str:
    where = projects.default or f"none found from {projects.start}: name one"
    return (
        "the project folder, absolute or relative to the server's working folder "
        f"(default: {where})"
    )


CAPABILITIES = "the task types you can work on (e.g. eng-backend, eng-qa, general)"
LEASE = "seconds you hold the task before it must be heartbeated (default: its timeout)"
CLAIM_NEXT = (
    "optional: {capabilities, lease?} to claim your next task in the same call; the "
    "reply's `next` is what queue_claim would have answered"
)

QUEUE = [
    ToolSpec(
        "queue_claim",
        "queue.claim",
        queue.ClaimParams,
        schemas.ClaimReply,
        "Claim the next task you can do: the highest-priority pending task of one of your "
        "types whose dependencies are done and whose type's circuit breaker admits it; two "
        "agents never hold the same task. `task` is null when there is nothing to do "
        "(`blocked` then names types held back by an open breaker, `paused`/`stopped` "
        "say the project is paused or stopping). " + LEASE_GUIDE,
        {"capabilities": CAPABILITIES, "lease": LEASE},
    ),
    ToolSpec(
        "queue_heartbeat",
        "queue.heartbeat",
        queue.HeartbeatParams,
        queue.HeartbeatResult,
        "Extend your lease on a task you hold, from now by `lease` seconds (default: the "
        "task's timeout); returns the new leaseUntil. Call it well before the lease runs "
        "out. A conflict error means you no longer hold the task (its lease ran out, or it "
        "was cancelled): stop working on it.",
        {"id": "the task's id", "lease": LEASE},
    ),
    ToolSpec(
        "queue_complete",
        "queue.complete",
        schemas.CompleteInput,
        schemas.TaskReply,
        "Complete a task you hold. result.decisionReport is required and must not be empty: "
        "say what you did, why, and the evidence (tests run, files changed). Tasks that "
        "depend on this one become claimable. Add claimNext to claim your next task in the "
        "same call. A conflict error means you no longer hold it.",
        {
            "id": "the task's id",
            "result": "{decisionReport (required, non-empty), status?: 'success', output?}",
            "claimNext": CLAIM_NEXT,
        },
    ),
    ToolSpec(
        "queue_fail",
        "queue.fail",
        queue.FailParams,
        schemas.TaskReply,
        "Give up on a task you hold, with the error text exactly as you got it. Each "
        "failure counts an attempt: the task is retried after a backoff (60, 120, 240 s "
        "...) and dead-lettered at maxRetries. A rate limit (the text says 429, rate "
        "limit, too many requests, quota exceeded or retry-after; or `retryAfter` is "
        "given) does not count: the task waits and returns to pending. Add claimNext to "
        "claim your next task in the same call.",
        {
            "id": "the task's id",
            "error": "the error text, verbatim (rate limits are detected from it)",
            "retryAfter": "seconds to wait before the task may be claimed again (a rate limit)",
            "claimNext": CLAIM_NEXT,
        },
    ),
    ToolSpec(
        "queue_enqueue",
        "queue.enqueue",
        schemas.EnqueueInput,
        queue.Enqueued,
        "Add a task. `task` takes type (an agent capability; default general), payload "
        "({action, target, params, goal, constraints, context} by convention), priority "
        "(1-10, or critical/high/medium/low), dependencies (ids that must complete "
        "first), timeout, maxRetries, backoffSeconds; other keys (title, description) are "
        "kept. The same payload while an equal task is pending, in progress or completed "
        "returns that task's id with duplicate: true (its idempotencyKey).",
        {"task": "the new task"},
    ),
    ToolSpec(
        "queue_enqueue_many",
        "queue.enqueue_many",
        schemas.EnqueueManyInput,
        queue.EnqueueManyResult,
        "Add many tasks at once, all or none; a task may depend on an earlier one of the "
        "same batch. Each task as in queue_enqueue.",
        {"tasks": "the new tasks, in order"},
    ),
    ToolSpec(
        "queue_get",
        "queue.get",
        queue.IdParams,
        schemas.TaskReply,
        "One task and its state (pending, in-progress, completed, dead-letter, cancelled).",
        {"id": "the task's id"},
        read_only=True,
    ),
    ToolSpec(
        "queue_list",
        "queue.list",
        queue.ListParams,
        schemas.TaskPageReply,
        "Tasks in creation order, optionally of one state and one type, a page at a time: "
        "pass the returned cursor for the next page (null: no more).",
        {"state": "only tasks in this state", "type": "only tasks of this type"},
        read_only=True,
    ),
    ToolSpec(
        "queue_stats",
        "queue.stats",
        projects.ProjectParams,
        queue.Stats,
        "Counts of tasks per state and per type, how many wait on dependencies, and the "
        "age of the oldest pending task.",
        read_only=True,
    ),
    ToolSpec(
        "dlq_list",
        "dlq.list",
        projects.ProjectParams,
        schemas.DlqReply,
        "The dead-lettered tasks: those that failed maxRetries times (see lastError).",
        read_only=True,
    ),
    ToolSpec(
        "dlq_retry",
        "dlq.retry",
        queue.DlqDecisionParams,
        queue.DlqDecision,
        "Put a dead-lettered task back to pending with its retries reset; the decision "
        "and the note are logged in .loki/logs/decisions/.",
        {"id": "the task's id", "note": "why (logged with the decision)"},
    ),
    ToolSpec(
        "dlq_delete",
        "dlq.delete",
        queue.DlqDecisionParams,
        queue.DlqDecision,
        "Delete a dead-lettered task for good; the decision and the note are logged.",
        {"id": "the task's id", "note": "why (logged with the decision)"},
        destructive=True,
    ),
]

PROJECT = [
    ToolSpec(
        "breakers_list",
        "breaker.list",
        projects.ProjectParams,
        breakers.BreakerList,
        "The circuit breakers per task type (closed, open, half-open) with their failure "
        "counts; an open breaker keeps its type from being claimed until it half-opens "
        "(halfOpenAt). Types not listed are closed.",
        read_only=True,
    ),
    ToolSpec(
        "project_status",
        "project.status",
        projects.ProjectParams,
        projects.ProjectStatus,
        "The project at a glance: paused or stopping, signals, the container run, task "
        "counts per state, breakers, Loki Mode's dashboard state, the last 20 events.",
        read_only=True,
    ),
    ToolSpec(
        "project_pause",
        "signal.pause",
        projects.ProjectParams,
        projects.Paused,
        "Pause the project (creates .loki/PAUSE, as `loki pause`, and lokid's own"
        " .loki/lokid/PAUSE): claims answer paused until resumed.",
    ),
    ToolSpec(
        "project_resume",
        "signal.resume",
        projects.ProjectParams,
        projects.Resumed,
        "Resume a paused or stopped project (removes .loki/PAUSE, lokid/PAUSE,"
        " PAUSE_AT_CHECKPOINT and STOP, as `loki resume`).",
    ),
]

RUNS = [
    ToolSpec(
        "run_start",
        "run.start",
        runs.RunStartParams,
        runs.RunStartResult,
        "Start Loki Mode's container for the project (pulls the image first unless pull "
        "is false). A run already up is a conflict. The container's dashboard is off and "
        "publishes no port: Loki Mode's dashboard on the host (`loki dashboard start`, port "
        "57374 or the next free one) lists the run.",
        {
            "args": "the command given to the image's loki entrypoint (default [start])",
            "env": "extra container environment",
        },
        omit=("api",),
    ),
    ToolSpec(
        "run_stop",
        "run.stop",
        runs.RunStopParams,
        runs.RunStopResult,
        "Stop and remove the project's container (SIGTERM, then SIGKILL after grace).",
        {"grace": "seconds between SIGTERM and SIGKILL (default: lokid's, 10)"},
        omit=("all",),
        destructive=True,
    ),
    ToolSpec(
        "run_status",
        "run.status",
        projects.ProjectParams,
        runs.RunStatusResult,
        "The project's container run (null when there is none).",
        read_only=True,
    ),
    ToolSpec(
        "run_logs",
        "run.logs",
        runs.RunLogsParams,
        runs.RunLogsResult,
        "The last lines of the project's container log.",
        {"tail": "how many of the last lines (default 200)"},
        omit=("follow",),
        defaults={"tail": 200},
        read_only=True,
    ),
]

TOOLS: dict[str, ToolSpec] = {spec.name: spec for spec in [*QUEUE, *PROJECT, *RUNS]}
