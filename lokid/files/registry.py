"""`~/.loki/dashboard/projects.json`, `.loki/docker/run.json` and `.loki/session.json`, in
Loki Mode's formats: what Loki Mode's shell and its host dashboard read about a container run.

The registry is shared with Loki Mode's own dashboard and shell, so every change is a
read-modify-write under their `flock` on `~/.loki/dashboard/.registry.lock` (an fcntl lock
per open file, which also keeps lokid's own threads apart), written to a temp file in the
same folder, fsynced and `os.replace`d: readers never see a torn file and no writer's entry
is lost. Entries lokid did not write are carried over untouched.

Loki Mode's host dashboard lists every registry entry whose folder exists
(`/api/running-projects`); one is *running* by its live `pid`, and an entry without one (a
container run: its processes are not the host's) by its folder's `.loki/session.json` having
`status: "running"`. Loki Mode's runner inside the container never writes that file (only
its skill does, and run.sh flips an existing one to its final status when it ends), so lokid
writes it for its runs and marks it stopped when the run ends.

These functions block (locks, fsync); the daemon calls them from a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from lokid.domain.containers import project_id
from lokid.files.reading import STATE_FILE_MAX, FileProblem, read_file
from lokid.wire.messages import UNDECODABLE

RUN_JSON = Path(".loki") / "docker" / "run.json"
SESSION_JSON = Path(".loki") / "session.json"
SESSION_WRITER = "lokid"  # session.json's `invokedVia` for the runs lokid started


class RunFile(msgspec.Struct):
    """`.loki/docker/run.json`, exactly the four keys Loki Mode's shell writes and reads."""

    container: str
    image: str
    project_dir: str
    started_at: str


def _now() -> str:
    # Loki Mode's registry stamps `datetime.now(timezone.utc).isoformat()`.
    return datetime.now(UTC).isoformat()


def registry_dir(home: Path | None = None) -> Path:
    return (home or Path.home()) / ".loki" / "dashboard"


@contextlib.contextmanager
def _flock(lock_file: Path) -> Iterator[None]:
    fd = os.open(lock_file, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _registry_lock(folder: Path) -> contextlib.AbstractContextManager[None]:
    folder.mkdir(parents=True, exist_ok=True)
    return _flock(folder / ".registry.lock")


def _load(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        data = None
    except (OSError, ValueError):
        data = None  # Loki Mode's loader also starts over from a corrupt file
    if not isinstance(data, dict) or not isinstance(data.get("projects"), dict):
        data = {"version": "1.0", "projects": {}}
    return data


def write_atomic(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Temp file in the same folder, then rename: the file is always whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _save(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str).encode())


def register_running(path: str, home: Path | None = None) -> dict[str, Any]:
    """Record a container run of `path` as Loki Mode's `loki docker` does: the entry its
    `register_project` makes (every key its dashboard's `RegisteredProjectResponse`
    requires), then `status: running`, `pid: null`. A `port` recorded by a local run stays:
    the container publishes none."""
    folder = registry_dir(home)
    with _registry_lock(folder):
        data = _load(folder / "projects.json")
        pid = project_id(path)
        now = _now()
        entry = data["projects"].get(pid)
        if not isinstance(entry, dict):
            entry = {
                "id": pid,
                "path": path,
                "name": os.path.basename(path) or path,
                "alias": None,
                "registered_at": now,
                "last_accessed": None,
            }
            data["projects"][pid] = entry
        entry.update(
            updated_at=now,
            has_loki_dir=os.path.isdir(os.path.join(path, ".loki")),
            status="running",
            pid=None,
        )
        _save(folder / "projects.json", data)
        return entry


def mark_stopped(path: str, home: Path | None = None) -> bool:
    """`status: stopped`, `pid: null`; the entry stays so the dashboard can still list it."""
    folder = registry_dir(home)
    if not (folder / "projects.json").exists():
        return False
    with _registry_lock(folder):
        data = _load(folder / "projects.json")
        entry = data["projects"].get(project_id(path))
        if not isinstance(entry, dict):
            return False
        entry.update(status="stopped", pid=None, updated_at=_now())
        _save(folder / "projects.json", data)
        return True


def registry_entries(home: Path | None = None) -> list[dict[str, Any]]:
    data = _load(registry_dir(home) / "projects.json")
    return [e for e in data["projects"].values() if isinstance(e, dict)]


def write_run_file(project_dir: str, run: RunFile) -> None:
    write_atomic(Path(project_dir) / RUN_JSON, json.dumps(msgspec.to_builtins(run)).encode())


def read_run_file(project_dir: str) -> RunFile | None:
    try:
        data = read_file(Path(project_dir) / RUN_JSON, STATE_FILE_MAX)
        return None if data is None else msgspec.json.decode(data, type=RunFile)
    except (FileProblem, *UNDECODABLE):
        return None


def remove_run_file(project_dir: str, container: str | None = None) -> bool:
    """Delete run.json; with `container`, only when it still names that container (a newer
    run of the project may have replaced it)."""
    if container is not None:
        current = read_run_file(project_dir)
        if current is not None and current.container != container:
            return False
    try:
        os.unlink(Path(project_dir) / RUN_JSON)
    except FileNotFoundError:
        return False
    return True


def _session_lock(project_dir: str) -> contextlib.AbstractContextManager[None]:
    # The lock Loki Mode's dashboard takes to write session.json (control.atomic_write_json).
    return _flock(Path(project_dir) / ".loki" / "session.json.lock")


def write_session_running(project_dir: str, started_at: str) -> None:
    """`.loki/session.json` saying the container run is on, in the shape Loki Mode's skill
    writes: its dashboard then lists the run as running, answers 409 to a second start
    there, and `loki status` says running."""
    now = _now()
    session = {
        "pid": None,
        "startedAt": started_at,
        "invokedVia": SESSION_WRITER,
        "status": "running",
        "updatedAt": now,
    }
    (Path(project_dir) / ".loki").mkdir(exist_ok=True)
    with _session_lock(project_dir):
        write_atomic(Path(project_dir) / SESSION_JSON, json.dumps(session, indent=2).encode())


def read_session(project_dir: str) -> dict[str, Any] | None:
    try:
        data = read_file(Path(project_dir) / SESSION_JSON, STATE_FILE_MAX)
        session = None if data is None else json.loads(data)
    except (FileProblem, ValueError):
        return None
    return session if isinstance(session, dict) else None


def _update_own_session(project_dir: str, **changes: Any) -> bool:
    """Change session.json under the dashboard's lock, but only one lokid wrote that still
    says running; a folder that is gone is not made again."""
    if not (Path(project_dir) / SESSION_JSON).is_file():
        return False
    try:
        with _session_lock(project_dir):
            session = read_session(project_dir)
            if (
                session is None
                or session.get("status") != "running"
                or session.get("invokedVia") != SESSION_WRITER
            ):
                return False
            session.update(changes)
            data = json.dumps(session, indent=2).encode()
            write_atomic(Path(project_dir) / SESSION_JSON, data)
            return True
    except FileNotFoundError:  # the folder went away meanwhile
        return False


def touch_session(project_dir: str) -> bool:
    """A fresh `updatedAt` in the running session.json lokid wrote."""
    return _update_own_session(project_dir, updatedAt=_now())


def mark_session_stopped(project_dir: str) -> bool:
    """The run ended: `status: stopped` (with `endedAt`), but only in a session.json lokid
    wrote that still says running. Loki Mode's runner sets its own final status when it
    ends, and a skill session started since is not lokid's to end. A project folder that
    is gone is not made again."""
    now = _now()
    return _update_own_session(project_dir, status="stopped", updatedAt=now, endedAt=now)
