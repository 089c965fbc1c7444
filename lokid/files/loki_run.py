"""Whether a Loki Mode run is live in a project, the way Loki Mode's own CLI decides it
(`is_session_running`: a live pid in `.loki/loki.pid`, `.loki/run.pid` or
`.loki/sessions/*/loki.pid`), plus a container run (`.loki/docker/run.json`, whose
process lives in the container and has no host pid)."""

from __future__ import annotations

import os
from pathlib import Path

from lokid.files.pids import alive, parse_pid
from lokid.files.reading import FileProblem, exists, read_file

PID_FILE_MAX = 64


def _pid_alive(path: Path) -> bool:
    try:
        data = read_file(path, PID_FILE_MAX)
    except FileProblem:
        return False
    pid = parse_pid(data) if data else None
    return pid is not None and alive(pid)


def pid_files(loki: Path) -> list[Path]:
    files = [loki / "loki.pid", loki / "run.pid"]
    try:
        sessions = sorted(os.scandir(loki / "sessions"), key=lambda e: e.name)
    except OSError:
        sessions = []
    files += [Path(e.path) / "loki.pid" for e in sessions if e.is_dir(follow_symlinks=False)]
    return files


def is_live(loki: Path) -> bool:
    """A Loki Mode run is live in the project whose `.loki/` folder is `loki`."""
    if exists(loki / "docker" / "run.json"):
        return True
    return any(_pid_alive(path) for path in pid_files(loki))
