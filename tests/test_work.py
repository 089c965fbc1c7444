"""`lokictl work`: a real worker process running a real command for each task it claims."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from pgenv import both_stores

from support import Lokid, call, wait_until

# The command each test runs: records its argv and environment's task id, waits while a gate
# file exists, and exits with the code the task's payload asks for.
JOB = """
import json, os, sys, time
out = sys.argv[1]
with open(out, "a") as f:
    f.write(json.dumps({"argv": sys.argv[2:], "id": os.environ["LOKI_TASK_ID"]}) + "\\n")
gate = out + ".gate"
while os.path.exists(gate):
    time.sleep(0.02)
sys.exit(json.loads(os.environ["LOKI_TASK_JSON"])["payload"].get("exit", 0))
"""


def work(lokid: Lokid, project: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lokictl", "--no-spawn", "work", "--project", str(project),
         "--cap", "build", *args],
        env={**os.environ, "LOKID_SOCKET": str(lokid.socket), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def job(out: Path, *extra: str) -> list[str]:
    return ["--", sys.executable, "-c", JOB, str(out), *extra]


def runs(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def enqueue(lokid, project, **payload) -> str:
    task = {"type": "build", "payload": payload, "maxRetries": 3}
    return call(lokid, "queue.enqueue", project, task=task)["id"]


@both_stores
def test_one_shot_runs_one_task_and_exits_with_its_code(lokid, project, tmp_short):
    """KEDA's ScaledJob sets LOKI_QUEUE_ONESHOT=1: one task per process, its exit code."""
    out = tmp_short / "out.jsonl"
    ok = enqueue(lokid, project, spec="prd.md")
    bad = enqueue(lokid, project, spec="issue#7", exit=3)
    first = work(lokid, project, *job(out, "{spec}", "--id={id}"), env={"LOKI_QUEUE_ONESHOT": "1"})
    assert first.wait(60) == 0, first.stderr.read()
    assert runs(out) == [{"argv": ["prd.md", f"--id={ok}"], "id": ok}]
    assert call(lokid, "queue.get", project, id=ok)["state"] == "completed"
    second = work(lokid, project, "--once", *job(out, "{spec}"))
    assert second.wait(60) == 3
    state = call(lokid, "queue.get", project, id=bad)
    assert (state["state"], state["task"]["retries"], state["task"]["lastError"]) == (
        "pending",
        1,
        "exit 3",
    )
    empty = work(lokid, project, "--once", *job(out))
    assert empty.wait(60) == 0 and len(runs(out)) == 2, "nothing ready: nothing run"


def test_a_spec_that_would_be_an_option_is_refused(lokid, project, tmp_short):
    out = tmp_short / "out.jsonl"
    task_id = enqueue(lokid, project, spec="--ship")
    proc = work(lokid, project, "--once", *job(out, "{spec}"))
    assert proc.wait(60) == 2
    assert runs(out) == []
    error = call(lokid, "queue.get", project, id=task_id)["task"]["lastError"]
    assert "payload.spec starts with '-'" in error


def test_the_loop_heartbeats_and_sigterm_lets_the_current_task_finish(lokid, project, tmp_short):
    """A lease of 1 s, a command that runs for longer: the heartbeats keep the task; SIGTERM
    mid-task waits for it, reports it, and claims nothing more."""
    out = tmp_short / "out.jsonl"
    gate = Path(f"{out}.gate")
    first = enqueue(lokid, project, n=1)
    worker = work(lokid, project, "--lease", "1", *job(out))
    try:
        wait_until(lambda: call(lokid, "queue.get", project, id=first)["state"] == "completed",
                   30, "the first task")  # fmt: skip
        gate.touch()
        second = enqueue(lokid, project, n=2)
        third = enqueue(lokid, project, n=3)
        wait_until(lambda: len(runs(out)) == 2, 30, "the second command to start")
        with lokid.client() as c:
            c.call("subscribe", {"topics": ["queue.lease-expired"], "project": str(project)})
            lease = call(lokid, "queue.get", project, id=second)["task"]
            assert lease["claimedBy"].startswith("work-")
            worker.send_signal(signal.SIGTERM)
            # three lease lengths with the command still running: heartbeats held the lease
            wait_until(lambda: worker.stderr is not None, 1)
            deadline_passed = _after(3.0)
            wait_until(deadline_passed, 10, "three lease lengths")
            assert call(lokid, "queue.get", project, id=second)["state"] == "in-progress"
            assert worker.poll() is None, "the worker waits for its command"
            gate.unlink()
            assert worker.wait(30) == 0
            assert list(_drain(c)) == [], "no lease ran out"
        assert call(lokid, "queue.get", project, id=second)["state"] == "completed"
        assert call(lokid, "queue.get", project, id=third)["state"] == "pending"
        assert [r["id"] for r in runs(out)] == [first, second]
    finally:
        gate.unlink(missing_ok=True)
        worker.kill()


def _after(seconds: float):
    import time

    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end


def _drain(client):
    while True:
        try:
            yield client.next_event(timeout=0.2)
        except TimeoutError:
            return
