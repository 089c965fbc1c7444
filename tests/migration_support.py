"""Migrations for tests: real folders in Loki Mode's format, real git repositories,
and other processes that take the manifest lock (migration_writer.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WRITER = Path(__file__).with_name("migration_writer.py")
PHASES = ("understand", "guardrail", "migrate", "verify")
MID = "mig_20260223_143052_app-a1b2c3"
GIT_ENV_ARGS = ["-c", "user.email=t@example.invalid", "-c", "user.name=t"]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *GIT_ENV_ARGS, *args], cwd=repo, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def git_repo(path: Path) -> Path:
    """A repository with one commit of `app.py`."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    (path / "app.py").write_text("print('v1')\n")
    git(path, "add", "app.py")
    git(path, "commit", "-q", "-m", "v1")
    return path


def tags(repo: Path) -> list[str]:
    return git(repo, "tag", "-l").split()


def manifest(mid: str, codebase: Path) -> dict:
    """What the engine's create_manifest writes: understand in progress, the rest pending."""
    return {
        "id": mid,
        "created_at": "2026-02-23T14:30:52.000001+00:00",
        "source_info": {"path": str(codebase), "type": "unknown"},
        "target_info": {"target": "typescript", "options": {}},
        "phases": {
            p: {
                "status": "in_progress" if p == "understand" else "pending",
                "started_at": "2026-02-23T14:30:52.000002+00:00" if p == "understand" else "",
                "completed_at": "",
            }
            for p in PHASES
        },
        "feature_list_path": "",
        "migration_plan_path": "",
        "checkpoints": [],
        "status": "pending",
        "progress_pct": 0,
        "updated_at": "",
        "source_path": "",
    }


def make_migration(root: Path, codebase: Path, mid: str = MID) -> Path:
    folder = root / mid
    (folder / "docs").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest(mid, codebase), indent=2))
    return folder


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def set_phases(folder: Path, **statuses: str) -> None:
    data = read_manifest(folder)
    for phase, status in statuses.items():
        data["phases"][phase]["status"] = status
    (folder / "manifest.json").write_text(json.dumps(data, indent=2))


def pass_understand_gate(folder: Path) -> None:
    (folder / "docs" / "architecture.md").write_text("# the app\n")
    (folder / "seams.json").write_text("[]")


def writer(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    """migration_writer.py in its own process (see its docstring for the commands)."""
    return subprocess.Popen(
        [sys.executable, str(WRITER), *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_writer(*args: str) -> None:
    proc = writer(*args)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def wait_locked(proc: subprocess.Popen[str]) -> None:
    """Until the writer says it holds the lock."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "locked\n", (line, proc.stderr.read() if proc.stderr else "")


def sessions(folder: Path) -> list[dict[str, str]]:
    """progress.md's sessions as {at, Agent, Phase, Summary, ...}."""
    text = (folder / "progress.md").read_text()
    out = []
    for block in text.split("\n## Session:")[1:]:
        at, _, rest = block.partition("\n")
        lines = dict(line.split(": ", 1) for line in rest.splitlines() if ": " in line)
        out.append({"at": at.strip(), **lines})
    return out
