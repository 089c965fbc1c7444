"""Loki Mode's own writers of `.loki/queue/*.json`, emulated from what they write and how.

Loki Mode's code is not part of CI, so each of its writers is written again here from its
format and its discipline (read from Loki Mode 9.22's `autonomy/run.sh` and `loki-ts`, and
from the files its writers produced, in ../shared/reference/loki-mode-samples/): which lock
it takes (a mkdir mutex, an O_EXCL file, or none), and how it writes (in place with
`open('w')`, or a temp file and a rename). Nothing here is Loki Mode's code.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_POLL, LOCK_TIMEOUT = 0.05, 5.0


def load(path: Path) -> tuple[list[Any], dict[str, Any] | None]:
    """A queue file as Loki Mode's readers take it: a list, or `{"tasks": [...]}`."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return [], None
    if isinstance(data, dict):
        return list(data.get("tasks", [])), {k: v for k, v in data.items() if k != "tasks"}
    return (data if isinstance(data, list) else []), None


def write_in_place(path: Path, tasks: list[Any], wrapper: dict[str, Any] | None = None) -> None:
    """`open(path, 'w')` + `json.dump(..., indent=2)`: truncates, then writes (a reader may
    see an empty or half-written file meanwhile; no lock)."""
    body = tasks if wrapper is None else {**wrapper, "tasks": tasks}
    text = json.dumps(body, indent=2)
    with open(path, "w") as f:
        half = len(text) // 2
        f.write(text[:half])
        f.flush()
        time.sleep(0.001)  # the window a reader can fall into, as with a slow disk
        f.write(text[half:])


def write_replacing(path: Path, tasks: list[Any]) -> None:
    """mkstemp in the same folder + `os.replace` (append_iteration_task_log, the Bun
    runner's atomic writes)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(tasks, f, indent=2)
    os.replace(tmp, path)


@contextlib.contextmanager
def mkdir_mutex(target: Path) -> Iterator[None]:
    """lib/lock.sh's `safe_acquire_lock`: `<target>.lockdir/owner.pid`, polled."""
    lockdir = Path(f"{target}.lockdir")
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            os.mkdir(lockdir)
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{lockdir} held too long") from None
            time.sleep(LOCK_POLL)
    try:
        (lockdir / "owner.pid").write_text(f"{os.getpid()}\n")
        yield
    finally:
        shutil.rmtree(lockdir, ignore_errors=True)


@contextlib.contextmanager
def bun_lock(path: Path) -> Iterator[None]:
    """loki-ts's `withFileLock`: an O_EXCL `<file>.lock` holding a pid."""
    lock = Path(f"{path}.lock")
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{lock} held too long") from None
            time.sleep(LOCK_POLL)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def story(n: int) -> dict[str, Any]:
    """A PRD story as `populate_prd_queue` writes it (string priority, status)."""
    return {
        "id": f"prd-{n:03d}",
        "title": f"User can do thing {n}",
        "description": f"User can do thing {n}\n- it works",
        "priority": ["high", "medium", "low", "critical"][n % 4],
        "status": "pending",
        "source": "prd",
        "project": "Test App",
        "acceptance_criteria": [f"thing {n} works", "All endpoints return JSON"],
        "user_story": f"As a user, I want thing {n}",
    }


def populate_prd_queue(queue: Path, n: int) -> None:
    """run.sh's `populate_prd_queue`: read pending.json, add the stories it lacks, write it
    back in place, with no lock."""
    path = queue / "pending.json"
    existing, wrapper = load(path)
    ids = {t.get("id") for t in existing if isinstance(t, dict)}
    if story(n)["id"] not in ids:
        existing.append(story(n))
    write_in_place(path, existing, wrapper)


def bun_populate(queue: Path, n: int) -> None:
    """loki-ts's `populatePrdQueue`: the same, under `pending.json.lock`, tmp + rename, and
    with `notes` and `logs` on each story."""
    path = queue / "pending.json"
    with bun_lock(path):
        existing, _ = load(path)
        ids = {t.get("id") for t in existing if isinstance(t, dict)}
        if story(n)["id"] not in ids:
            existing.append({**story(n), "notes": [], "logs": []})
        write_replacing(path, existing)


def iteration_card(n: int) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "id": f"iteration-{n}",
        "type": "iteration",
        "title": "Building from prd.md",
        "description": "Implementing the spec in prd.md and verifying it.",
        "status": "in_progress",
        "priority": "medium",
        "startedAt": now,
        "provider": "claude",
        "acceptance_criteria": [],
        "notes": [],
        "logs": [{"timestamp": now, "iteration": n, "level": "info", "phase": "BOOTSTRAP",
                  "message": f"Iteration {n} started"}],
    }  # fmt: skip


def track_iteration_start(queue: Path, n: int) -> None:
    """run.sh: append the iteration's card to in-progress.json under `.in-progress.lock`,
    written in place (`>`)."""
    path = queue / "in-progress.json"
    with mkdir_mutex(queue / ".in-progress.lock"):
        existing, _ = load(path)
        existing.append(iteration_card(n))
        write_in_place(path, existing)


def append_iteration_task_log(queue: Path, n: int, message: str) -> None:
    """run.sh: add a log line to the iteration's card; no lock, mkstemp + replace."""
    path = queue / "in-progress.json"
    tasks, _ = load(path)
    for task in tasks:
        if isinstance(task, dict) and task.get("id") == f"iteration-{n}":
            task.setdefault("logs", []).append({"iteration": n, "message": message})
            write_replacing(path, tasks)
            return


def track_iteration_complete(queue: Path, n: int, exit_code: int) -> None:
    """run.sh: lift the card out of in-progress.json into completed.json (exit 0) or
    failed.json, upserted by id and capped at 50; the id removed from the other file and
    from in-progress.json. No lock; each file written in place."""
    task_id = f"iteration-{n}"
    target, other = (
        ("completed.json", "failed.json") if exit_code == 0 else ("failed.json", "completed.json")
    )
    inprog, _ = load(queue / "in-progress.json")
    prior = next((t for t in inprog if isinstance(t, dict) and t.get("id") == task_id), {})
    entry = {
        "id": task_id,
        "type": "iteration",
        "title": f"Iteration {n} complete - DEVELOPMENT",
        "status": "completed" if exit_code == 0 else "failed",
        "completedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "exitCode": exit_code,
        "provider": "claude",
        "logs": prior.get("logs", []),
    }
    if prior.get("startedAt"):
        entry["startedAt"] = prior["startedAt"]
    data, _ = load(queue / target)
    data = [t for t in data if not (isinstance(t, dict) and t.get("id") == task_id)]
    data.append(entry)
    write_in_place(queue / target, data[-50:])
    odata, _ = load(queue / other)
    write_in_place(
        queue / other, [t for t in odata if not (isinstance(t, dict) and t.get("id") == task_id)]
    )
    idata, _ = load(queue / "in-progress.json")
    write_in_place(
        queue / "in-progress.json",
        [t for t in idata if not (isinstance(t, dict) and t.get("id") == task_id)],
    )


def todo_item(i: int, round_: int) -> dict[str, Any]:
    return {
        "id": f"todo-{i}",
        "type": "todo",
        "title": f"step {i} of round {round_}",
        "description": "Internal task tracked by the agent TodoWrite tool.",
        "source": "claude_code_todowrite",
        "priority": "medium",
        "payload": {"action": f"step {i}", "activeForm": f"doing step {i}"},
    }


def save_in_progress_todos(queue: Path, round_: int) -> list[dict[str, Any]]:
    """run.sh's stream parser on a TodoWrite: the whole in-progress.json replaced by the
    agent's todo items, in place, with no lock (it drops whatever else was there)."""
    todos = [todo_item(i, round_) for i in range(1 + round_ % 4)]
    write_in_place(queue / "in-progress.json", todos)
    return todos


def prompt_tasks(queue: Path) -> dict[str, list[str]]:
    """run.sh's `load_queue_tasks`: the first three entries of in-progress.json (told to the
    agent as "IN-PROGRESS TASKS (EXECUTE THESE)") and of pending.json ("PENDING")."""
    out = {}
    for name, key in (("in-progress.json", "execute"), ("pending.json", "pending")):
        tasks, _ = load(queue / name)
        out[key] = [t.get("id") for t in tasks[:3] if isinstance(t, dict)]
    return out
