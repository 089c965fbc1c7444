"""Another process changing a migration as Loki Mode's dashboard and `loki migrate` do.

Standalone on purpose (no lokid import): it is the outside world. Each change is
one read-modify-write of the manifest (or progress.md) under Loki Mode 7.63's
lock: a fresh fd on `<dir>/manifest.json.lock`, a blocking `flock(LOCK_EX)`.
The manifest is loaded keeping only the engine's fields and written as the
engine writes it (json indent 2, mkstemp in the folder, fsync, os.replace).

    migration_writer.py checkpoints DIR NAME N   add N checkpoint tags NAME_0..NAME_{N-1}
    migration_writer.py progress DIR NAME N      append N sessions, summaries NAME-0...
    migration_writer.py mixed DIR NAME N M SEED  N checkpoints and M sessions, interleaved,
                                                 after a line on stdin (a common start)
    migration_writer.py start DIR PHASE          start a phase (as the engine's start_phase)
    migration_writer.py advance DIR PHASE        advance it (no gate: the write only)
    migration_writer.py hold DIR SECONDS         hold the lock, print "locked", then let go
    migration_writer.py hold-then-corrupt DIR    hold it, print "locked", wait for a line on
                                                 stdin, replace the manifest with junk, let go
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

PHASES = ["understand", "guardrail", "migrate", "verify"]
FIELDS = {
    "id": "",
    "created_at": "",
    "source_info": {},
    "target_info": {},
    "phases": {},
    "feature_list_path": "",
    "migration_plan_path": "",
    "checkpoints": [],
    "status": "pending",
    "progress_pct": 0,
    "updated_at": "",
    "source_path": "",
}


@contextlib.contextmanager
def locked(folder: Path):
    fd = os.open(folder / "manifest.json.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def replace(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load(folder: Path) -> dict:
    data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return {key: data.get(key, default) for key, default in FIELDS.items()}


def save(folder: Path, manifest: dict) -> None:
    replace(folder / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))


def now() -> str:
    return datetime.now(UTC).isoformat()


def add_checkpoint(folder: Path, step: str) -> None:
    with locked(folder):
        manifest = load(folder)
        manifest["checkpoints"].append(f"loki-migrate/{step}/pre")
        save(folder, manifest)


def session_phase(phases: dict) -> str:
    current = "pending"
    for phase in PHASES:
        status = phases.get(phase, {}).get("status", "pending")
        if status == "in_progress":
            return phase
        if status == "completed":
            current = phase
    return current


def add_session(folder: Path, agent: str, summary: str) -> None:
    path = folder / "progress.md"
    with locked(folder):
        phase = session_phase(load(folder)["phases"])
        entry = f"\n## Session: {now()}\nAgent: {agent}\nPhase: {phase}\nSummary: {summary}\n"
        if path.exists():
            parts = path.read_text(encoding="utf-8").split("\n## Session:")
            if len(parts) > 50:
                parts = [parts[0], *parts[-50:]]
            text = "\n## Session:".join(parts) + entry
        else:
            text = f"# Migration Progress\n# Auto-updated after every agent session\n{entry}"
        replace(path, text)


def start(folder: Path, phase: str) -> None:
    with locked(folder):
        manifest = load(folder)
        entry = manifest["phases"].setdefault(phase, {"status": "pending"})
        if entry.get("status") != "in_progress":
            entry.update(status="in_progress", started_at=now(), completed_at="")
            save(folder, manifest)


def advance(folder: Path, phase: str) -> None:
    with locked(folder):
        manifest = load(folder)
        stamp = now()
        manifest["phases"][phase].update(status="completed", completed_at=stamp)
        index = PHASES.index(phase)
        if index + 1 < len(PHASES):
            manifest["phases"][PHASES[index + 1]].update(status="in_progress", started_at=stamp)
        save(folder, manifest)


def jitter(rng: random.Random) -> None:
    """A pause of 0-2 ms between changes, so they interleave with the other writers'."""
    time.sleep(rng.random() * 0.002)


def main(argv: list[str]) -> None:
    command, folder = argv[0], Path(argv[1])
    if command == "checkpoints":
        rng = random.Random(argv[2])
        for i in range(int(argv[3])):
            add_checkpoint(folder, f"{argv[2]}_{i}")
            jitter(rng)
    elif command == "progress":
        rng = random.Random(argv[2])
        for i in range(int(argv[3])):
            add_session(folder, argv[2], f"{argv[2]}-{i}")
            jitter(rng)
    elif command == "mixed":
        name, rng = argv[2], random.Random(int(argv[5]))
        work = ["c"] * int(argv[3]) + ["p"] * int(argv[4])
        rng.shuffle(work)
        counts = {"c": 0, "p": 0}
        print("ready", flush=True)
        sys.stdin.readline()
        for kind in work:
            if kind == "c":
                add_checkpoint(folder, f"{name}_{counts['c']}")
            else:
                add_session(folder, name, f"{name}-{counts['p']}")
            counts[kind] += 1
            jitter(rng)
    elif command == "start":
        start(folder, argv[2])
    elif command == "advance":
        advance(folder, argv[2])
    elif command == "hold":
        with locked(folder):
            print("locked", flush=True)
            time.sleep(float(argv[2]))
    elif command == "hold-then-corrupt":
        with locked(folder):
            print("locked", flush=True)
            sys.stdin.readline()
            replace(folder / "manifest.json", "{not json")
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
