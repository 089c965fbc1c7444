"""The queue through a real daemon: concurrency, files, events, crashes, lokictl."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pgenv import both_stores

from lokictl import DaemonError
from support import Lokid, call, lokictl, run_threads, wait_until

REPORT = {"decisionReport": {"why": "done"}}


def view(project: Path, state: str) -> list:
    path = project / ".loki" / "queue" / f"{state}.json"
    return json.loads(path.read_bytes()) if path.exists() else []


@both_stores
def test_workers_cycling_with_claim_next_never_share_a_task(lokid, project):
    """Each worker claims once, then completes with `claimNext` until the queue is
    empty: every task completed exactly once, by the agent that held it."""
    tasks = [{"type": "eng", "payload": {"n": i}} for i in range(200)]
    call(lokid, "queue.enqueue_many", project, tasks=tasks)
    done: dict[str, list[str]] = {}
    lock = threading.Lock()

    def worker(name: str) -> None:
        with lokid.client() as c:
            params = {"project": str(project), "agent": name}
            task = c.call("queue.claim", {**params, "capabilities": ["eng"]})["task"]
            while task is not None:
                reply = c.call(
                    "queue.complete",
                    {**params, "id": task["id"], "result": REPORT,
                     "claimNext": {"capabilities": ["eng"]}},
                )  # fmt: skip
                assert reply["state"] == "completed"
                with lock:
                    done.setdefault(task["id"], []).append(name)
                task = reply["next"]["task"]
                assert task is None or task["claimedBy"] == name

    run_threads(worker, [(f"w{i}",) for i in range(8)])
    assert len(done) == 200 and all(len(agents) == 1 for agents in done.values())
    assert call(lokid, "queue.stats", project)["states"]["completed"] == 200


@both_stores
def test_claim_next_answers_stopped_after_stop(lokid, project):
    call(
        lokid,
        "queue.enqueue_many",
        project,
        tasks=[{"type": "eng", "payload": {"n": i}} for i in range(2)],
    )
    task = call(lokid, "queue.claim", project, agent="a", capabilities=["eng"])["task"]
    (project / ".loki" / "STOP").touch()
    reply = call(
        lokid, "queue.complete", project, id=task["id"], agent="a", result=REPORT,
        claimNext={"capabilities": ["eng"]},
    )  # fmt: skip
    assert reply["state"] == "completed" and reply["next"] == {"task": None, "stopped": True}
    assert call(lokid, "queue.stats", project)["states"]["in-progress"] == 0
    with pytest.raises(DaemonError) as err:
        call(lokid, "queue.complete", project, id=task["id"], agent="a", result=REPORT,
             claimNext={"capabilities": []})  # fmt: skip
    assert err.value.code == "invalid_params"


@both_stores
def test_many_concurrent_claimers_never_share_a_task(lokid, project):
    tasks = [{"type": "eng", "payload": {"n": i}} for i in range(300)]
    call(lokid, "queue.enqueue_many", project, tasks=tasks)
    claimed: dict[str, list[str]] = {}
    lock = threading.Lock()

    def agent(name: str) -> None:
        with lokid.client() as c:
            while True:
                task = c.call(
                    "queue.claim",
                    {"project": str(project), "agent": name, "capabilities": ["eng"]},
                )["task"]
                if task is None:
                    return
                with lock:
                    claimed.setdefault(task["id"], []).append(name)

    run_threads(agent, [(f"agent-{i}",) for i in range(16)])
    assert len(claimed) == 300
    assert all(len(holders) == 1 for holders in claimed.values())


@both_stores
def test_views_are_bare_arrays_that_follow_the_database(lokid, project):
    first = call(lokid, "queue.enqueue", project, task={"type": "eng", "payload": {"a": 1}})["id"]
    second = call(lokid, "queue.enqueue", project, task={"type": "eng", "payload": {"a": 2}})["id"]
    call(lokid, "queue.claim", project, agent="a", capabilities=["eng"])
    call(lokid, "queue.complete", project, id=first, agent="a", result=REPORT)
    wait_until(lambda: [t["id"] for t in view(project, "completed")] == [first], what="views")
    assert [t["id"] for t in view(project, "pending")] == [second]
    assert view(project, "in-progress") == []
    pending = view(project, "pending")[0]
    assert pending["claimedBy"] is None and pending["idempotencyKey"]
    for state in ("dead-letter", "cancelled"):
        assert view(project, state) == []
    # Our own entries (managedBy: lokid) read back in are not taken for new tasks.
    assert pending["managedBy"] == "lokid" and pending["status"] == "pending"
    assert call(lokid, "queue.import", project) == {
        "imported": 0,
        "skipped": 0,
        "quarantined": None,
    }


@both_stores
def test_a_task_added_to_pending_json_by_loki_mode_is_imported_once(lokid, project):
    call(lokid, "queue.enqueue", project, task={"type": "eng", "payload": {"a": 1}})
    path = project / ".loki" / "queue" / "pending.json"
    wait_until(lambda: len(view(project, "pending")) == 1, what="the view")
    tasks = json.loads(path.read_bytes())
    tasks.append({"id": "prd-001", "title": "User login", "priority": "high", "status": "pending"})
    path.write_text(json.dumps(tasks))
    # The watcher may import it first; either way it is imported exactly once.
    imported = call(lokid, "queue.import", project)["imported"]
    imported += call(lokid, "queue.import", project)["imported"]
    assert imported <= 1
    assert call(lokid, "queue.stats", project)["states"]["pending"] == 2
    task = call(lokid, "queue.get", project, id="prd-001")
    assert task["state"] == "pending" and task["task"]["title"] == "User login"
    assert task["task"]["priority"] == 8 and task["task"]["type"] == "general"
    wait_until(lambda: len(view(project, "pending")) == 2, what="the import in the view")
    ids = [t["id"] for t in view(project, "pending")]
    assert sorted(ids).count("prd-001") == 1


@both_stores
def test_the_wrapped_tasks_shape_is_imported_too(lokid, project):
    queue = project / ".loki" / "queue"
    queue.mkdir(parents=True)
    (queue / "pending.json").write_text(json.dumps({"tasks": [{"id": "t-1", "type": "ops"}]}))
    assert call(lokid, "queue.import", project)["imported"] == 1


@both_stores
def test_a_corrupt_pending_json_is_quarantined_and_nothing_is_lost(lokid, project):
    call(lokid, "queue.enqueue", project, task={"type": "eng", "payload": {"a": 1}})
    path = project / ".loki" / "queue" / "pending.json"
    wait_until(lambda: len(view(project, "pending")) == 1, what="the view")
    with lokid.client() as watcher:
        watcher.call("subscribe", {"topics": ["queue.quarantined"]})
        path.write_text('[{"id": "half-written", ')
        result = call(lokid, "queue.import", project)
        event = watcher.next_event(timeout=10)
    copy = Path(result["quarantined"])
    assert copy.read_text() == '[{"id": "half-written", '
    assert copy.parent == project / ".loki" / "queue" / "quarantine"
    assert event["data"]["copy"] == str(copy) and "not valid JSON" in event["data"]["error"]
    assert call(lokid, "queue.stats", project)["states"]["pending"] == 1
    # The next view write restores a valid file.
    call(lokid, "queue.enqueue", project, task={"type": "eng", "payload": {"a": 2}})
    wait_until(lambda: _parses(path) and len(view(project, "pending")) == 2, what="the repair")


def _parses(path: Path) -> bool:
    try:
        json.loads(path.read_bytes())
    except ValueError:
        return False
    return True


@both_stores
def test_views_take_loki_modes_lock_and_wait_for_it(lokid, project):
    queue = project / ".loki" / "queue"
    lockdir = queue / ".pending.lock.lockdir"
    lockdir.mkdir(parents=True)
    (lockdir / "owner.pid").write_text(str(os.getpid()))  # a live holder
    call(lokid, "queue.enqueue", project, task={"type": "eng", "payload": {"a": 1}})
    wait_until(lambda: (queue / "in-progress.json").exists(), what="the unlocked views")
    assert view(project, "pending") == [], "pending.json must wait for the lock"
    lockdir.joinpath("owner.pid").unlink()
    lockdir.rmdir()
    wait_until(lambda: len(view(project, "pending")) == 1, what="pending.json after the lock")


@both_stores
def test_a_lease_that_runs_out_emits_an_event_and_retries(lokid, project):
    task_id = call(lokid, "queue.enqueue", project, task={"type": "eng", "payload": {}})["id"]
    with lokid.client() as watcher:
        watcher.call("subscribe", {"topics": ["queue.lease-expired", "queue.retrying"]})
        call(lokid, "queue.claim", project, agent="a", capabilities=["eng"], lease=0.2)
        topics = [watcher.next_event(timeout=10)["topic"] for _ in range(2)]
    assert topics == ["queue.lease-expired", "queue.retrying"]
    state = call(lokid, "queue.get", project, id=task_id)
    assert state["state"] == "pending" and state["task"]["lastError"] == "lease expired"


@both_stores
def test_wire_errors_for_queue_calls(lokid, project):
    with pytest.raises(DaemonError) as info:
        call(lokid, "queue.get", project, id="nope")
    assert info.value.code == "not_found"
    with pytest.raises(DaemonError) as info:
        lokid.call("queue.stats", {"project": "relative/path"})
    assert info.value.code == "invalid_params"
    with pytest.raises(DaemonError) as info:
        lokid.call("queue.stats", {"project": "/a/../b"})
    assert info.value.code == "invalid_params"
    with pytest.raises(DaemonError) as info:
        call(lokid, "queue.claim", project, agent="a", capabilities=[])
    assert info.value.code == "invalid_params"
    with pytest.raises(DaemonError) as info:
        lokid.call("queue.stats", {"project": "/no/such/folder"})
    assert info.value.code == "not_found"


@both_stores
def test_dlq_decisions_are_logged(lokid, project):
    task = {"type": "eng", "payload": {}, "maxRetries": 1}
    task_id = call(lokid, "queue.enqueue", project, task=task)["id"]
    call(lokid, "queue.claim", project, agent="a", capabilities=["eng"])
    call(lokid, "queue.fail", project, id=task_id, agent="a", error="bad input")
    assert [t["id"] for t in call(lokid, "dlq.list", project)["tasks"]] == [task_id]
    call(lokid, "dlq.retry", project, id=task_id, note="input fixed upstream")
    logs = list((project / ".loki" / "logs" / "decisions").glob("dlq-review-*.md"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert f"retry {task_id}" in text and "input fixed upstream" in text and "bad input" in text


def test_a_subscriber_that_never_reads_gets_a_resync_instead_of_a_backlog(tmp_short):
    lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "info", "LOKID_OUTBOX_LIMIT": "65536"})
    lokid.start()
    project = tmp_short / "proj"
    project.mkdir()
    try:
        slow = lokid.client()
        sub = slow.call("subscribe", {"topics": ["queue.*"]})["sub"]
        batch = [{"type": "eng", "payload": {"n": i}} for i in range(5000)]
        call(lokid, "queue.enqueue_many", project, tasks=batch)  # 5,000 events, ~1 MB
        seqs, resync = [], None
        while resync is None:
            event = slow.next_event(timeout=10)
            assert event["sub"] == sub
            if event["topic"] == "resync":
                resync = event
            else:
                seqs.append(event["seq"])
        assert seqs == list(range(1, len(seqs) + 1)), "gapless before the gap"
        assert len(seqs) < 5000, "events were queued without bound instead of dropped"
        data = resync["data"]
        assert data["first"] == seqs[-1] + 1
        assert data["dropped"] == data["last"] - data["first"] + 1
        assert resync["seq"] == data["last"] + 1
        # The subscription carries on after the resync.
        call(lokid, "queue.enqueue", project, task={"type": "eng", "payload": {"after": 1}})
        event = slow.next_event(timeout=10)
        assert (event["topic"], event["seq"]) == ("queue.enqueued", resync["seq"] + 1)
        assert "is slow; dropping events" in lokid.log()
    finally:
        lokid.kill()


WORKER = r"""
import json, sys, itertools
from lokictl import Client
socket_path, project, log_path = sys.argv[1:4]
log = open(log_path, "a", buffering=1)
c = Client.connect(socket_path)
p = {"project": project}
for i in itertools.count():
    r = c.call("queue.enqueue", p | {"task": {"id": f"t{i}", "type": "eng", "payload": {"i": i}}})
    log.write(json.dumps(["enqueued", r["id"]]) + "\n")
    if i % 2 == 0:
        t = c.call("queue.claim", p | {"agent": "w", "capabilities": ["eng"]})["task"]
        if t is not None:
            report = {"decisionReport": {"i": i}}
            c.call("queue.complete", p | {"id": t["id"], "agent": "w", "result": report})
            log.write(json.dumps(["completed", t["id"]]) + "\n")
"""


@both_stores
@pytest.mark.parametrize("round_", range(3))
def test_acknowledged_operations_survive_sigkill(tmp_short, round_, store_env):
    project = tmp_short / "proj"
    project.mkdir()
    lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "warning", **store_env}).start()
    log_path = tmp_short / "acks.jsonl"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(lokid.socket), str(project), str(log_path)],
        stderr=subprocess.DEVNULL,
    )
    try:
        target = random.Random(round_).randint(50, 400)
        wait_until(lambda: _count_lines(log_path) >= target, 60, "acknowledged operations")
        lokid.proc.send_signal(signal.SIGKILL)
        lokid.proc.wait(10)
        worker.wait(30)
    finally:
        worker.kill()
    acked = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    restarted = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "warning", **store_env}).start()
    try:
        for kind, task_id in acked:
            state = call(restarted, "queue.get", project, id=task_id)["state"]
            if kind == "completed":
                assert state == "completed", task_id
        assert len(acked) >= target
    finally:
        restarted.kill()


def _count_lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


@both_stores
def test_lokictl_queue_commands(lokid, project):
    def ctl(*args: str) -> subprocess.CompletedProcess:
        return lokictl(lokid, project, *args)

    (project / ".loki").mkdir(exist_ok=True)  # lokictl works inside a project only
    added = ctl("--json", "queue", "add", "eng", "--priority", "high", "--payload", '{"a":1}')
    task_id = json.loads(added.stdout)["id"]
    claimed = ctl("--json", "queue", "claim", "--agent", "me", "--cap", "eng")
    assert json.loads(claimed.stdout)["task"]["id"] == task_id
    refused = ctl("queue", "complete", task_id, "--agent", "other", "--report", '{"x": 1}')
    assert refused.returncode == 1 and "conflict" in refused.stderr
    second = json.loads(ctl("--json", "queue", "add", "eng", "--payload", '{"b":2}').stdout)["id"]
    done = ctl(
        "queue", "complete", task_id, "--agent", "me", "--report", '{"ok": 1}', "--next", "eng"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"{task_id} completed"
    assert done.stdout.splitlines()[1].startswith("next: ") and second in done.stdout
    last = ctl("queue", "complete", second, "--agent", "me", "--report", "1", "--next", "eng")
    assert last.stdout.splitlines() == [f"{second} completed", "next: no task"]
    stats = json.loads(ctl("--json", "queue", "stats").stdout)
    assert stats["states"]["completed"] == 2
    assert ctl("breakers", "trip", "eng").stdout.strip() == "eng: open"
    assert "eng" in ctl("breakers").stdout
    assert ctl("breakers", "reset", "eng").stdout.strip() == "eng: closed"
    bad = ctl("queue", "add", "eng", "--payload", "{nope")
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr
