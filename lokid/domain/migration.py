"""Loki Mode's codebase migrations (`loki migrate`, 7.63), as pure rules.

Loki Mode's engine (`dashboard/migration_engine.py`) keeps each migration in
`~/.loki/migrations/<id>/`; this module holds its rules without touching a
file: which ids and step names are valid, the phase order and what starting
and advancing a phase do to the manifest's `phases`, the gate that must pass
before a phase may be left, the summary its dashboard shows, and the
`progress.md` format with its cap. Every reason string is the engine's own
wording, so a user sees the same sentence from lokid, the dashboard and the CLI.

Files reach these functions already read, as `JsonFile` facts; times are
passed in as the strings to write (Loki Mode's: `datetime.isoformat()` in UTC).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PHASES: tuple[str, ...] = ("understand", "guardrail", "migrate", "verify")
PhaseStatus = Literal["pending", "in_progress", "completed"]
# The engine writes only the first three; readers also know "failed" (list_migrations).
MigrationStatus = Literal["pending", "in_progress", "completed", "failed"]

PROGRESS_KEEP = 50  # sessions of progress.md kept before a new one is appended
# Longest agent, summary or detail text: progress.md is read and rewritten whole on every
# append, so its size stays bounded (51 sessions of a few such texts).
MAX_TEXT = 65536
FAILING_SHOWN = 5  # a failing gate names at most this many feature or step ids
SESSION_MARK = "\n## Session:"
PROGRESS_HEADER = "# Migration Progress\n# Auto-updated after every agent session\n"

# Loki Mode matches `^mig_\d{8}_\d{6}_[a-zA-Z0-9_-]+$` with re.match; lokid takes the same
# pattern whole (fullmatch, ASCII digits), so no id with a trailing newline or a non-ASCII
# digit reaches a path.
_ID = re.compile(r"mig_[0-9]{8}_[0-9]{6}_[a-zA-Z0-9_-]+")
_STEP = re.compile(r"[a-zA-Z0-9_-]+")  # a step id becomes part of a git tag name


# -- names -------------------------------------------------------------------------------


def id_problem(text: str) -> str | None:
    """Why `text` is not a migration id (it names a folder, so it is checked first)."""
    if _ID.fullmatch(text):
        return None
    return f"invalid migration id {text!r}: must match ^mig_YYYYMMDD_HHMMSS_<name>$"


def step_problem(text: str) -> str | None:
    if _STEP.fullmatch(text):
        return None
    return f"invalid step id {text!r}: must match ^[a-zA-Z0-9_-]+$"


def phase_problem(text: str) -> str | None:
    if text in PHASES:
        return None
    return f"unknown phase {text!r}: one of {', '.join(PHASES)}"


def next_phase(phase: str) -> str | None:
    """The phase after `phase`; None after the last (`verify`)."""
    index = PHASES.index(phase)
    return PHASES[index + 1] if index + 1 < len(PHASES) else None


def checkpoint_tag(step: str) -> str:
    return f"loki-migrate/{step}/pre"


def tag_step(tag: str) -> str | None:
    """The step a checkpoint tag names, read as the engine reads it (second `/` part)."""
    parts = tag.split("/")
    return parts[1] if len(parts) >= 2 else None


# -- phases ------------------------------------------------------------------------------


def phase_entry(phases: Mapping[str, Any], phase: str) -> dict[str, Any]:
    """A phase's record; a missing or malformed one reads as a fresh pending phase."""
    entry = phases.get(phase)
    if isinstance(entry, dict):
        return entry
    return {"status": "pending", "started_at": "", "completed_at": ""}


def phase_status(phases: Mapping[str, Any], phase: str) -> str:
    status = phase_entry(phases, phase).get("status", "pending")
    return status if isinstance(status, str) else "pending"


def started(phases: Mapping[str, Any], phase: str, now: str) -> dict[str, Any] | None:
    """`phases` with `phase` in progress, or None when it already is (nothing to write).

    As in the engine, any other phase may be (re)started, a completed one too (what
    `loki migrate --resume --phase <p>` does); its completion time is cleared.
    """
    if phase_status(phases, phase) == "in_progress":
        return None
    entry = {**phase_entry(phases, phase), "status": "in_progress"}
    entry["started_at"] = now
    entry["completed_at"] = ""
    return {**phases, phase: entry}


def advance_problem(phases: Mapping[str, Any], phase: str) -> str | None:
    status = phase_status(phases, phase)
    if status == "in_progress":
        return None
    return f"Cannot advance phase '{phase}': status is '{status}', expected 'in_progress'"


def advanced(phases: Mapping[str, Any], phase: str, now: str) -> dict[str, Any]:
    """`phase` completed at `now` and the next one in progress since `now` (call
    `advance_problem` and the gate first). The next phase's `completed_at` is left as
    it was, as the engine leaves it."""
    out = {**phases, phase: {**phase_entry(phases, phase), "status": "completed"}}
    out[phase]["completed_at"] = now
    following = next_phase(phase)
    if following is not None:
        out[following] = {**phase_entry(phases, following), "status": "in_progress"}
        out[following]["started_at"] = now
    return out


def current_phase(phases: Mapping[str, Any]) -> str:
    """The dashboard's current phase: the last phase that is not pending, else `pending`."""
    current = "pending"
    for phase in PHASES:
        if phase_status(phases, phase) in ("in_progress", "completed", "failed"):
            current = phase
    return current


def session_phase(phases: Mapping[str, Any]) -> str:
    """The phase a progress.md session is filed under: the first in progress, else the
    last completed, else `pending` (the engine's update_progress)."""
    current = "pending"
    for phase in PHASES:
        status = phase_status(phases, phase)
        if status == "in_progress":
            return phase
        if status == "completed":
            current = phase
    return current


def overall_status(phases: Mapping[str, Any]) -> str:
    """A migration's status as `loki migrate --list` derives it from the phases."""
    statuses = [phase_status(phases, phase) for phase in PHASES]
    for status in statuses:
        if status in ("failed", "in_progress"):
            return status
    if all(status == "completed" for status in statuses):
        return "completed"
    # Some phases completed, none in progress: the engine calls that partial progress.
    return "in_progress" if "completed" in statuses else "pending"


# -- gates -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JsonFile:
    """What reading one JSON file gave: absent, unparsable (`error`), or `data`."""

    present: bool
    data: Any = None
    error: str | None = None


MISSING = JsonFile(False)


@dataclass(frozen=True, slots=True)
class GateFacts:
    """The files the gates look at; a reader fills only what the gate at hand needs."""

    docs_count: int = 0  # entries in docs/ (0 when it does not exist)
    seams_present: bool = False  # seams.json exists (its content is not looked at)
    features: JsonFile = MISSING  # features.json
    plan: JsonFile = MISSING  # migration-plan.json


def feature_list(features: JsonFile) -> tuple[list[dict[str, Any]], str | None]:
    """features.json as a list of feature objects, or why it is invalid.

    Loki Mode accepts a list or `{"features": [...]}` (a map without the key is an
    empty list); each feature needs an `id`; other keys are tolerated.
    """
    if features.error is not None:
        return [], features.error
    data = features.data
    if isinstance(data, dict):
        data = data.get("features", [])
    if not isinstance(data, list):
        return [], 'expected a list of features or {"features": [...]}'
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            return [], f"feature {index} is not an object"
        if "id" not in item:
            return [], f"feature {index} has no id"
    return data, None


def plan_steps(plan: JsonFile) -> tuple[list[dict[str, Any]], str | None]:
    """migration-plan.json's steps (each an object with an `id`), or why it is invalid."""
    if plan.error is not None:
        return [], plan.error
    if not isinstance(plan.data, dict):
        return [], "expected an object with a steps list"
    steps = plan.data.get("steps", [])
    if not isinstance(steps, list):
        return [], "steps is not a list"
    for index, item in enumerate(steps):
        if not isinstance(item, dict):
            return [], f"step {index} is not an object"
        if "id" not in item:
            return [], f"step {index} has no id"
    return steps, None


def _ids(items: list[dict[str, Any]]) -> str:
    return ", ".join(str(item["id"]) for item in items[:FAILING_SHOWN])


def _understand_gate(facts: GateFacts) -> str | None:
    if facts.docs_count <= 0:
        return "Phase gate failed: no documentation generated in docs/"
    if not facts.seams_present:
        return "Phase gate failed: seams.json does not exist"
    return None


def _guardrail_gate(facts: GateFacts) -> str | None:
    if not facts.features.present:
        return "Phase gate failed: features.json not found"
    features, invalid = feature_list(facts.features)
    if invalid is not None:
        return f"Phase gate failed: features.json is invalid: {invalid}"
    if not features:
        return "No features defined"
    failing = [f for f in features if not f.get("passes", False)]
    if failing:
        return (
            f"Phase gate failed: {len(failing)} characterization tests not passing"
            f" ({_ids(failing)})"
        )
    return None


def _migrate_gate(facts: GateFacts) -> str | None:
    if not facts.plan.present:
        return "Phase gate failed: migration-plan.json not found"
    steps, invalid = plan_steps(facts.plan)
    if invalid is not None:
        return f"Phase gate failed: migration-plan.json is invalid: {invalid}"
    incomplete = [s for s in steps if s.get("status", "pending") != "completed"]
    if incomplete:
        return f"Phase gate failed: {len(incomplete)} steps not completed ({_ids(incomplete)})"
    return None


_GATES = {"understand": _understand_gate, "guardrail": _guardrail_gate, "migrate": _migrate_gate}


def gate(from_phase: str, to_phase: str, facts: GateFacts) -> str | None:
    """None when a migration may go from `from_phase` to `to_phase`, else the reason.

    - understand → guardrail: docs/ is not empty, and seams.json exists;
    - guardrail → migrate: features.json is a non-empty list of features that all
      pass (`passes` true, read as Python truth as the engine reads it);
    - migrate → verify: every step of migration-plan.json is `completed` (a plan
      without steps passes);
    - any jump over a phase, or backwards, is refused.
    """
    for phase in (from_phase, to_phase):
        if phase not in PHASES:
            return f"Unknown phase: {from_phase} or {to_phase}"
    if PHASES.index(to_phase) != PHASES.index(from_phase) + 1:
        return f"Cannot jump from {from_phase} to {to_phase}"
    return _GATES[from_phase](facts)


def gate_to_leave(phase: str, facts: GateFacts) -> str | None:
    """The gate on advancing `phase`; the last phase has none."""
    following = next_phase(phase)
    return None if following is None else gate(phase, following, facts)


def gate_needs(phase: str) -> frozenset[str]:
    """Which of GateFacts' fields the gate on leaving `phase` reads."""
    return {
        "understand": frozenset({"docs_count", "seams_present"}),
        "guardrail": frozenset({"features"}),
        "migrate": frozenset({"plan"}),
    }.get(phase, frozenset())


# -- the dashboard's summary -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LastCheckpoint:
    tag: str
    step_id: str
    timestamp: str


@dataclass(frozen=True, slots=True)
class Summary:
    """What `loki migrate --status` and the dashboard show of a migration."""

    status: str
    current_phase: str
    completed_phases: list[str]
    features_passing: int
    features_total: int
    steps_current: int  # 1-based index of the step being worked on; 0 without steps
    steps_completed: int
    steps_total: int
    current_step: str | None  # the first step in progress
    last_checkpoint: LastCheckpoint | None
    checkpoints_count: int


def summarize(
    phases: Mapping[str, Any],
    checkpoints: list[str],
    features: JsonFile = MISSING,
    plan: JsonFile = MISSING,
    last_meta: JsonFile = MISSING,
) -> Summary:
    """The summary from the manifest's phases and checkpoints, features.json,
    migration-plan.json and the last checkpoint's `checkpoints/<step>.json`.
    An unreadable features or plan file counts as none."""
    feature_items, bad_features = feature_list(features) if features.present else ([], None)
    if bad_features is not None:
        feature_items = []
    steps, bad_plan = plan_steps(plan) if plan.present else ([], None)
    if bad_plan is not None:
        steps = []
    done = sum(1 for s in steps if s.get("status") == "completed")
    working = [s for s in steps if s.get("status") == "in_progress"]
    return Summary(
        status=overall_status(phases),
        current_phase=current_phase(phases),
        completed_phases=[p for p in PHASES if phase_status(phases, p) == "completed"],
        features_passing=sum(1 for f in feature_items if f.get("passes", False)),
        features_total=len(feature_items),
        steps_current=min(done + 1, len(steps)) if steps else 0,
        steps_completed=done,
        steps_total=len(steps),
        current_step=str(working[0]["id"]) if working else None,
        last_checkpoint=_last_checkpoint(checkpoints, last_meta),
        checkpoints_count=len(checkpoints),
    )


def _last_checkpoint(checkpoints: list[str], meta: JsonFile) -> LastCheckpoint | None:
    if not checkpoints:
        return None
    tag = str(checkpoints[-1])
    step = tag_step(tag)
    if step is None:
        return None
    if not meta.present or meta.error is not None or not isinstance(meta.data, dict):
        return LastCheckpoint(tag, "", "")
    data = meta.data
    return LastCheckpoint(
        str(data.get("tag", tag)), str(data.get("step_id", step)), str(data.get("created_at", ""))
    )


# -- progress.md -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Details:
    """The optional lines of a session; a falsy value is left out, as the engine does."""

    steps_completed: str | int | None = None
    tests_passing: str | int | None = None
    notes: str | None = None


def progress_problem(agent: str, summary: str, details: Details | None = None) -> str | None:
    """Why these texts cannot be a session: one would forge or cut another session."""
    if not agent.strip() or "\n" in agent or "\r" in agent:
        return "agent must be one non-empty line"
    if not summary.strip():
        return "summary must not be empty"
    texts = {"summary": summary}
    if details is not None:
        texts.update(steps_completed=str(details.steps_completed), notes=str(details.notes))
        texts["tests_passing"] = str(details.tests_passing)
    texts["agent"] = agent
    for name, text in texts.items():
        if len(text) > MAX_TEXT:
            return f"{name} is longer than {MAX_TEXT} characters"
        if SESSION_MARK in text or text.startswith(SESSION_MARK[1:]):
            return f"{name} must not contain a line starting with '## Session:'"
    return None


def progress_entry(
    at: str, agent: str, phase: str, summary: str, details: Details | None = None
) -> str:
    """One session block, exactly as the engine appends it."""
    entry = f"\n## Session: {at}\nAgent: {agent}\nPhase: {phase}\nSummary: {summary}\n"
    if details is not None:
        if details.steps_completed:
            entry += f"Steps completed: {details.steps_completed}\n"
        if details.tests_passing:
            entry += f"Tests: {details.tests_passing}\n"
        if details.notes:
            entry += f"Notes: {details.notes}\n"
    return entry


def append_session(existing: str | None, entry: str) -> str:
    """progress.md with `entry` appended: a new file gets the header; an existing one is
    first cut to its header and last PROGRESS_KEEP sessions (so it holds at most
    PROGRESS_KEEP + 1 afterwards: Loki Mode's rule, kept exactly)."""
    if existing is None:
        return PROGRESS_HEADER + entry
    parts = existing.split(SESSION_MARK)
    if len(parts) > PROGRESS_KEEP:
        existing = parts[0] + SESSION_MARK + SESSION_MARK.join(parts[-PROGRESS_KEEP:])
    return existing + entry


@dataclass(frozen=True, slots=True)
class Session:
    at: str
    agent: str
    phase: str
    summary: str
    lines: dict[str, str] = field(default_factory=dict)  # Steps completed, Tests, Notes


def session_blocks(text: str) -> list[str]:
    """The raw session blocks of progress.md (what follows each `## Session:`)."""
    return text.split(SESSION_MARK)[1:]


def parse_session(block: str) -> Session:
    """One block as written by `progress_entry`; missing lines read as empty."""
    at, _, rest = block.partition("\n")
    keys = {"Agent": "", "Phase": "", "Summary": ""}
    extra: dict[str, str] = {}
    current: str | None = None
    for line in rest.split("\n"):
        key, sep, value = line.partition(": ")
        if sep and (key in keys or key in ("Steps completed", "Tests", "Notes")):
            current = key
            (keys if key in keys else extra)[key] = value
        elif current == "Summary" and line:
            keys["Summary"] += "\n" + line
    return Session(at.strip(), keys["Agent"], keys["Phase"], keys["Summary"], extra)
