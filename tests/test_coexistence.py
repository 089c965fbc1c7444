"""lokid and a live Loki Mode run in one `.loki/` folder (issue 16).

Each of Loki Mode's writers (emulated in loki_writers.py, locks and all) runs in a loop
beside lokid agents that enqueue, claim, complete and fail, for hundreds of interleavings.
Afterwards, every entry either side wrote is present exactly once, in the right file:
Loki Mode's as its writer last left them, lokid's as its database says.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import loki_writers as loki
import pytest

from lokictl import Client, DaemonError
from support import Lokid, call, no_engine, wait_until

FILES = {
    "pending.json": "pending",
    "in-progress.json": "in-progress",
    "completed.json": "completed",
    "failed.json": "dead-letter",
    "dead-letter.json": "dead-letter",
    "cancelled.json": "cancelled",
}
DURATION = 4.0  # seconds of load per scenario


@pytest.fixture
def lokid(tmp_short):
    daemon = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "info", **no_engine(tmp_short)}).start()
    yield daemon
    daemon.kill()


@pytest.fixture
def queue(project) -> Path:
    folder = project / ".loki" / "queue"
    folder.mkdir()
    return folder


def entries(queue: Path, name: str) -> list[dict]:
    tasks, _ = loki.load(queue / name)
    return [t for t in tasks if isinstance(t, dict)]


STATES = ("pending", "in-progress", "completed", "dead-letter", "cancelled")
KEEP = 500  # completed.json holds lokid's newest 500 (LOKID_COMPLETED_KEEP)


def database(lokid: Lokid, project: Path) -> dict[str, str]:
    """Every task's state, in creation order."""
    states: dict[str, str] = {}
    with lokid.client() as client:
        for state in STATES:
            cursor = None
            while True:
                page = client.call("queue.list", {"project": str(project), "state": state,
                                                  "limit": 1000, "cursor": cursor})  # fmt: skip
                states.update(dict.fromkeys((t["id"] for t in page["tasks"]), state))
                cursor = page["cursor"]
                if cursor is None:
                    break
    return states


def in_state(db: dict[str, str], state: str) -> set[str]:
    ids = [i for i, s in db.items() if s == state]
    return set(ids[-KEEP:] if state == "completed" else ids)


def lokid_files_differ(lokid: Lokid, project: Path, queue: Path, live: bool = False) -> str:
    """'' when each file holds exactly lokid's tasks of its state (once each)."""
    db = database(lokid, project)
    for name, state in FILES.items():
        ours = [e["id"] for e in entries(queue, name) if e.get("managedBy") == "lokid"]
        want = set() if (live and state == "in-progress") else in_state(db, state)
        if sorted(ours) != sorted(want):
            extra, missing = set(ours) - want, want - set(ours)
            return (
                f"{name}: lokid has {len(ours)}, the database {len(want)}; "
                f"extra {sorted(extra)[:3]}, missing {sorted(missing)[:3]}"
            )
        dup = [i for i, n in Counter(e.get("id") for e in entries(queue, name)).items() if n > 1]
        if dup:
            return f"{name}: {dup[:5]} twice"
    return ""


def settle(lokid: Lokid, project: Path, queue: Path, live: bool = False) -> None:
    try:
        wait_until(lambda: not lokid_files_differ(lokid, project, queue, live), 30, "the files")
    except AssertionError:
        raise AssertionError(lokid_files_differ(lokid, project, queue, live)) from None


class Agents:
    """lokid agents cycling for `seconds`: enqueue, claim, complete or fail."""

    def __init__(self, lokid: Lokid, project: Path, caps: list[str]) -> None:
        self.lokid, self.project, self.caps = lokid, project, caps
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[str] = []

    def start(self, n: int = 3) -> Agents:
        for i in range(n):
            thread = threading.Thread(target=self._work, args=(f"agent-{i}",))
            thread.start()
            self.threads.append(thread)
        return self

    def _work(self, name: str) -> None:
        rng = random.Random(name)
        p = {"project": str(self.project)}
        with Client.connect(self.lokid.socket) as client:
            while not self.stop.is_set():
                try:
                    client.call("queue.enqueue", p | {"task": {"type": "eng", "maxRetries": 2,
                                "backoffSeconds": 0, "payload": {"r": rng.random()}}})  # fmt: skip
                    got = client.call("queue.claim", p | {"agent": name, "capabilities": self.caps})
                    task = got["task"]
                    if task is None:
                        continue
                    time.sleep(rng.uniform(0, 0.01))
                    if rng.random() < 0.7:
                        client.call("queue.complete", p | {"id": task["id"], "agent": name,
                                    "result": {"decisionReport": "done"}})  # fmt: skip
                    else:
                        client.call("queue.fail", p | {"id": task["id"], "agent": name,
                                    "error": "flaky"})  # fmt: skip
                except DaemonError as err:
                    self.errors.append(f"{err.code}: {err.message}")

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not [e for e in self.errors if not e.startswith("unavailable")], self.errors[:3]


def loop_for(seconds: float, step) -> int:
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        step(n)
        n += 1
    return n


def dashboard_opens_every_task(queue: Path) -> None:
    """The dashboard's task board calls `(task.priority || "medium").toLowerCase()` on every
    task of the queue files: run exactly that, in Node."""
    script = (
        "const fs=require('fs');for(const f of process.argv.slice(1)){let d;"
        "try{d=JSON.parse(fs.readFileSync(f,'utf8'))}catch(e){continue}"
        "const ts=Array.isArray(d)?d:(d.tasks||[]);for(const t of ts){"
        "(t.priority||'medium').toLowerCase()}}"
    )
    files = [str(queue / name) for name in FILES]
    subprocess.run(["node", "-e", script, *files], check=True, timeout=30)


# -- pending.json: the PRD stories ---------------------------------------------------------


@pytest.mark.parametrize("writer", [loki.populate_prd_queue, loki.bun_populate])
def test_prd_stories_and_lokid_agents_share_pending_json(lokid, project, queue, writer):
    lokid.call("project.add", {"path": str(project)})
    agents = Agents(lokid, project, ["eng", "general"]).start()
    written = loop_for(DURATION, lambda n: writer(queue, n))
    agents.join()
    settle(lokid, project, queue)
    db = database(lokid, project)
    shown = {state: in_state(db, state) for state in STATES}
    for n in range(written):  # every story imported exactly once, and in its state's file
        story = loki.story(n)
        assert story["id"] in db, story["id"]
        where = [
            name for name in FILES if any(e.get("id") == story["id"] for e in entries(queue, name))
        ]
        state = db[story["id"]]
        if story["id"] not in shown[state]:
            continue  # completed.json shows lokid's newest 500 only
        expected = [name for name, s in FILES.items() if s == state]
        assert where == expected, (story["id"], state, where)
        entry = next(e for e in entries(queue, expected[0]) if e["id"] == story["id"])
        for key in ("title", "description", "priority", "acceptance_criteria", "user_story"):
            assert entry[key] == story[key], (key, entry)
        loki_status = {"pending": "pending", "in-progress": "in_progress", "completed": "completed",
                       "dead-letter": "failed", "cancelled": "cancelled"}[state]  # fmt: skip
        assert entry["status"] == loki_status
    dashboard_opens_every_task(queue)


# -- in-progress.json: iteration cards, their logs, and their completion --------------------


def test_iteration_cards_and_records_survive_lokid_agents(lokid, project, queue):
    lokid.call("project.add", {"path": str(project)})
    agents = Agents(lokid, project, ["eng"]).start()

    def iteration(n: int) -> None:
        loki.track_iteration_start(queue, n)
        loki.append_iteration_task_log(queue, n, "wrote the login form")
        loki.append_iteration_task_log(queue, n, "tests pass")
        loki.track_iteration_complete(queue, n, 0 if n % 3 else 1)

    done = loop_for(DURATION, iteration)
    loki.track_iteration_start(queue, done)  # one still running at the end
    loki.append_iteration_task_log(queue, done, "half way")
    agents.join()
    settle(lokid, project, queue)
    records = Counter(
        e["id"] for name in ("completed.json", "failed.json") for e in entries(queue, name)
        if e.get("type") == "iteration"
    )  # fmt: skip
    want = {f"iteration-{n}" for n in range(max(0, done - 50), done)}  # Loki Mode's own cap
    assert want <= set(records) and all(records[i] == 1 for i in want), want - set(records)
    for name in ("completed.json", "failed.json"):
        for e in entries(queue, name):
            if e.get("id") in want:  # the card's logs went with it
                assert [log["message"] for log in e["logs"][-2:]] == [
                    "wrote the login form",
                    "tests pass",
                ]
    cards = [e for e in entries(queue, "in-progress.json") if e.get("type") == "iteration"]
    assert [c["id"] for c in cards] == [f"iteration-{done}"], json.dumps(cards)[:3000]
    assert cards[0]["logs"][-1]["message"] == "half way"
    dashboard_opens_every_task(queue)


@pytest.mark.parametrize("live", [False, True], ids=["no-run", "live-run"])
def test_todowrite_replacing_in_progress_json_never_loses_lokids_tasks(lokid, project, queue, live):
    """TodoWrite rewrites the whole file, in place, with no lock. While a run is live (the
    only time it happens) lokid keeps out of in-progress.json, so the agent's last list is
    the file, exactly. Without a run (a stress case) lokid writes its block there all the
    time, and a list that went into the file lokid was replacing is merged by id, as for
    Loki Mode's read-modify-write writers: the file may then differ from the last list by
    items of the lists before it, until the next TodoWrite; lokid's block stays exact."""
    if live:
        (project / ".loki" / "loki.pid").write_text(f"{os.getpid()}\n")
    lokid.call("project.add", {"path": str(project)})
    agents = Agents(lokid, project, ["eng"]).start()
    last: list[dict] = []
    written: list[dict] = []

    def todos(n: int) -> None:
        last[:] = loki.save_in_progress_todos(queue, n)
        written.extend(last)
        time.sleep(0.005)

    loop_for(DURATION, todos)
    agents.join()
    settle(lokid, project, queue, live)
    theirs = [e for e in entries(queue, "in-progress.json") if e.get("managedBy") != "lokid"]
    if live:
        assert theirs == last, "the agent's last todo list, exactly"
        return
    assert len({e["id"] for e in theirs}) == len(theirs), "each item once"
    assert all(e in written for e in theirs), "nothing but what the agent wrote"


# -- the prompt: a Loki Mode agent is never told to do a lokid agent's work ------------------


def test_a_live_run_is_never_told_to_execute_a_task_a_lokid_agent_holds(lokid, project, queue):
    lokid.call("project.add", {"path": str(project)})
    call(lokid, "queue.enqueue", project, task={"id": "held-before", "type": "eng"})
    call(lokid, "queue.claim", project, agent="a", capabilities=["eng"])
    wait_until(
        lambda: "held-before" in {e.get("id") for e in entries(queue, "in-progress.json")},
        what="a held task in in-progress.json while no run is live",
    )
    (project / ".loki" / "loki.pid").write_text(f"{os.getpid()}\n")  # a Loki Mode run starts
    settle(lokid, project, queue, live=True)
    agents = Agents(lokid, project, ["eng"]).start()
    held: set[str] = {"held-before"}
    seen: list[list[str]] = []

    def look(n: int) -> None:
        loki.track_iteration_start(queue, n)  # the run's own card, in place
        seen.append(loki.prompt_tasks(queue)["execute"])
        loki.track_iteration_complete(queue, n, 0)

    loop_for(DURATION, look)
    agents.join()
    held |= {i for i, s in database(lokid, project).items() if s == "in-progress"}
    lokid_ids = set(database(lokid, project))
    told = {i for execute in seen for i in execute if i in lokid_ids}
    assert not told, f"told to execute lokid tasks: {sorted(told)[:5]}"
    settle(lokid, project, queue, live=True)
    (project / ".loki" / "loki.pid").unlink()  # the run ended: lokid's tasks come back
    settle(lokid, project, queue)


# -- failures where Loki Mode looks -------------------------------------------------------


def test_dead_letters_show_in_failed_json_beside_loki_modes_records(lokid, project, queue):
    loki.track_iteration_start(queue, 1)
    loki.track_iteration_complete(queue, 1, 1)  # Loki Mode's own failure
    call(lokid, "queue.enqueue", project, task={"id": "doomed", "type": "eng", "maxRetries": 1})
    call(lokid, "queue.claim", project, agent="a", capabilities=["eng"])
    call(lokid, "queue.fail", project, id="doomed", agent="a", error="boom")
    settle(lokid, project, queue)
    failed = entries(queue, "failed.json")
    assert [e["id"] for e in failed] == ["doomed", "iteration-1"], "lokid's block first"
    assert failed[0]["status"] == "failed" and failed[0]["managedBy"] == "lokid"
    call(lokid, "dlq.delete", project, id="doomed", note="decided")
    settle(lokid, project, queue)
    assert [e["id"] for e in entries(queue, "failed.json")] == ["iteration-1"]


# -- a checkpoint rollback copies .loki/state/ back ------------------------------------------


def test_a_checkpoint_copied_over_state_cannot_corrupt_lokid(lokid, project, queue):
    state = project / ".loki" / "state"
    call(lokid, "queue.enqueue", project, task={"type": "eng", "payload": {"first": 1}})
    state.mkdir(exist_ok=True)
    (state / "orchestrator.json").write_text('{"version": "1"}')
    snapshot = project.parent / "snapshot"
    shutil.copytree(state, snapshot)
    agents = Agents(lokid, project, ["eng"]).start()

    def rollback(n: int) -> None:
        shutil.copytree(snapshot, state, dirs_exist_ok=True)
        time.sleep(0.02)

    loop_for(DURATION, rollback)
    agents.join()
    assert call(lokid, "queue.stats", project)["states"]["pending"] >= 0
    settle(lokid, project, queue)
    assert not (state / "lokid.db").exists(), "lokid's database is not Loki Mode's to restore"


# -- signals as Loki Mode means them --------------------------------------------------------


def claim_answer(lokid: Lokid, project: Path) -> dict:
    return call(lokid, "queue.claim", project, agent="a", capabilities=["eng"])


def test_a_pause_outlives_perpetual_mode_removing_pause(lokid, project, queue):
    call(lokid, "queue.enqueue", project, task={"id": "t", "type": "eng"})
    paused = call(lokid, "signal.pause", project)
    assert paused["paused"] and "perpetual mode" in paused["note"]
    (project / ".loki" / "PAUSE").unlink()  # run.sh in perpetual mode, at its next check
    assert claim_answer(lokid, project) == {"task": None, "paused": True}
    resumed = call(lokid, "signal.resume", project)
    assert resumed == {"paused": False, "stopped": False, "cleared": ["lokid/PAUSE"]}
    assert claim_answer(lokid, project)["task"]["id"] == "t"


def test_pause_at_checkpoint_pauses_claims_and_resume_clears_everything(lokid, project, queue):
    loki = project / ".loki"
    call(lokid, "queue.enqueue", project, task={"id": "t", "type": "eng"})
    (loki / "PAUSE_AT_CHECKPOINT").touch()
    assert claim_answer(lokid, project) == {"task": None, "paused": True}
    (loki / "STOP").touch()
    (loki / "PAUSE").touch()
    resumed = call(lokid, "signal.resume", project)
    assert sorted(resumed["cleared"]) == ["PAUSE", "PAUSE_AT_CHECKPOINT", "STOP"]
    assert not any((loki / name).exists() for name in ("PAUSE", "PAUSE_AT_CHECKPOINT", "STOP"))
    assert claim_answer(lokid, project)["task"]["id"] == "t"


# -- reads change nothing ---------------------------------------------------------------------


def tree(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def test_reading_state_changes_no_file(lokid, project, queue):
    loki.populate_prd_queue(queue, 1)
    loki.track_iteration_start(queue, 1)
    before = tree(project)
    p = {"project": str(project)}
    lokid.call("project.status", p)
    lokid.call("project.list")
    lokid.call("daemon.info")
    lokid.call("queue.stats", p)
    lokid.call("queue.list", p | {"state": "pending"})
    with pytest.raises(DaemonError):
        lokid.call("queue.get", p | {"id": "prd-001"})
    lokid.call("dlq.list", p)
    lokid.call("breaker.list", p)
    assert tree(project) == before, "a read wrote into the project"
    assert lokid.call("project.list")["projects"] == [], "a read started watching it"
    bare = project.parent / "bare"
    bare.mkdir()
    lokid.call("project.status", {"project": str(bare)})
    lokid.call("queue.stats", {"project": str(bare)})
    assert list(bare.iterdir()) == [], "a read made .loki/"
