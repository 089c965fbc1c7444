"""The watcher on real files, with real inotify, in a real daemon."""

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from support import Lokid, call, lokictl, wait_until


@pytest.fixture
def project(project: Path) -> Path:
    (project / ".loki" / "signals").mkdir()
    return project


@pytest.fixture
def watched(lokid, project):
    """A subscribed client on a watched project; events arrive in order."""
    client = lokid.client()
    client.call("subscribe", {"topics": ["*"], "project": str(project)})
    client.call("project.add", {"path": str(project)})  # answers once .loki/ is under watch
    yield client
    client.close()


def next_topic(client, topic: str, timeout: float = 10, where=lambda data: True) -> dict:
    """The next event with this topic whose data passes `where` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        event = client.next_event(timeout=max(0.1, deadline - time.monotonic()))
        if topic in (event["topic"], "*") and where(event["data"]):
            return event


def test_pause_and_resume_gate_claims(lokid, project, watched):
    call(lokid, "queue.enqueue", project, task={"type": "eng", "payload": {}})
    (project / ".loki" / "PAUSE").touch()
    assert next_topic(watched, "signal.pause")["data"] == {"file": "PAUSE"}
    assert call(lokid, "queue.claim", project, agent="a", capabilities=["eng"]) == {
        "task": None,
        "paused": True,
    }
    (project / ".loki" / "PAUSE").unlink()
    assert next_topic(watched, "signal.resume")["data"] == {"file": "PAUSE"}
    assert call(lokid, "queue.claim", project, agent="a", capabilities=["eng"])["task"]


def test_pause_at_checkpoint_is_announced(project, watched):
    (project / ".loki" / "PAUSE_AT_CHECKPOINT").touch()
    assert next_topic(watched, "signal.pause")["data"] == {"file": "PAUSE_AT_CHECKPOINT"}


def test_stop_is_announced_and_blocks_claims_until_gone(lokid, project, watched):
    call(lokid, "queue.enqueue", project, task={"type": "eng", "payload": {}})
    assert call(lokid, "signal.stop", project) == {"stopping": True}
    assert next_topic(watched, "signal.stop")["data"] == {"file": "STOP"}
    claim = call(lokid, "queue.claim", project, agent="a", capabilities=["eng"])
    assert claim == {"task": None, "stopped": True}
    (project / ".loki" / "STOP").unlink()
    assert call(lokid, "queue.claim", project, agent="a", capabilities=["eng"])["task"]


def test_signal_files_become_events_with_their_json(project, watched):
    budget = project / ".loki" / "signals" / "BUDGET_EXCEEDED"
    budget.write_text(json.dumps({"type": "budget", "limit": 5, "current": 6}))
    event = next_topic(watched, "signal.budget-exceeded")
    assert event["data"] == {
        "name": "BUDGET_EXCEEDED",
        "present": True,
        "content": {"type": "budget", "limit": 5, "current": 6},
    }
    budget.unlink()
    gone = next_topic(watched, "signal.budget-exceeded")["data"]
    assert (gone["present"], gone["content"]) == (False, None)
    (project / ".loki" / "signals" / "COMPLETION_REQUESTED").touch()
    marker = next_topic(watched, "signal.completion-requested")["data"]
    assert (marker["present"], marker["content"]) == (True, None)


def test_rate_limited_signal_asks_agents_to_slow_down(project, watched):
    (project / ".loki" / "signals" / "RATE_LIMITED").write_text('{"retryAfter": 40}')
    assert next_topic(watched, "queue.slowdown")["data"] == {"type": None, "wait": 20.0}


def test_tasks_added_to_pending_json_are_imported(lokid, project, watched):
    queue = project / ".loki" / "queue"
    queue.mkdir(exist_ok=True)
    (queue / "pending.json").write_text(json.dumps([{"id": "gh-12", "title": "Fix login"}]))
    assert next_topic(watched, "queue.enqueued")["data"]["id"] == "gh-12"
    assert call(lokid, "queue.get", project, id="gh-12")["task"]["title"] == "Fix login"


def test_a_burst_of_writes_is_imported_a_bounded_number_of_times(lokid, project, watched):
    queue = project / ".loki" / "queue"
    queue.mkdir(exist_ok=True)
    tasks = []
    for i in range(1000):
        tasks.append({"id": f"t-{i}", "type": "eng"})
        tmp = queue / "pending.json.tmp"
        tmp.write_text(json.dumps(tasks))
        os.replace(tmp, queue / "pending.json")
    wait_until(
        lambda: call(lokid, "queue.stats", project)["states"]["pending"] == 1000,
        what="all 1,000 tasks",
    )
    # A batch closes 5 ms after the last change, and the watcher takes no new batch while an
    # import runs, so the count depends on how fast this machine writes; ~15-60 here. The
    # point is far fewer imports than writes.
    imports = lokid.log().count("pending.json changed in")
    assert 1 <= imports <= 100, f"{imports} imports for 1,000 writes"


def test_lokids_own_view_writes_are_not_imported(lokid, project, watched):
    tasks = [{"type": "eng", "payload": {"n": i}} for i in range(50)]
    for task in tasks:
        call(lokid, "queue.enqueue", project, task=task)
    pending = project / ".loki" / "queue" / "pending.json"
    wait_until(lambda: pending.exists() and len(json.loads(pending.read_text())) == 50, what="view")
    call(lokid, "signal.pause", project)  # a later change, to be sure the watcher caught up
    next_topic(watched, "signal.pause")
    assert "pending.json changed in" not in lokid.log()


def test_breaker_config_edits_are_reloaded(project, watched):
    config = project / ".loki" / "config"
    config.mkdir(exist_ok=True)
    (config / "circuit-breakers.yaml").write_text("defaults: {failureThreshold: 2}\n")
    assert next_topic(watched, "config.reloaded")["project"] == str(project)
    (config / "circuit-breakers.yaml").write_text("defaults: {failureThreshold: many}\n")
    assert "failureThreshold" in next_topic(watched, "config.invalid")["data"]["error"]


def test_prd_changes_carry_their_provenance(project, watched):
    signature = {
        "signature": "gitc:abc",
        "prd_sha": "0123456789abcdef",
        "source": "user",
        "origin_path": "/abs/prd.md",
        "mode": "git",
    }
    state = project / ".loki" / "state"
    state.mkdir(exist_ok=True)  # the queue may have made it already
    (state / "prd-signature.json").write_text(json.dumps(signature))
    data = next_topic(watched, "prd.changed")["data"]
    assert data == {
        "file": "state/prd-signature.json",
        "source": "user",
        "prd_sha": "0123456789abcdef",
        "signature": "gitc:abc",
        "origin_path": "/abs/prd.md",
    }
    (project / ".loki" / "generated-prd.md").write_text("# PRD\n")
    generated = next_topic(watched, "prd.changed", where=lambda d: d["file"] == "generated-prd.md")
    assert generated["data"]["source"] == "user"


def test_events_jsonl_lines_become_loki_events(project, watched):
    log = project / ".loki" / "events.jsonl"
    with open(log, "a") as f:
        f.write(json.dumps({"timestamp": "t", "type": "iteration_start", "data": {"i": 3}}) + "\n")
        f.write("not json\n")
        f.write(json.dumps({"timestamp": "t", "type": "phase_change", "data": {}}) + "\n")
    assert next_topic(watched, "loki.iteration_start")["data"]["data"] == {"i": 3}
    assert next_topic(watched, "loki.phase_change")["data"]["type"] == "phase_change"
    # Rotation: a new, shorter file is read from its start.
    log.unlink()
    log.write_text(json.dumps({"type": "session_start"}) + "\n")
    assert next_topic(watched, "loki.session_start")["data"] == {"type": "session_start"}
    # A line arriving in two writes is one event.
    with open(log, "a") as f:
        f.write('{"type": "split')
        f.flush()
        time.sleep(0.05)  # two separate writes, as an appender may make them
        f.write('_line"}\n')
    assert next_topic(watched, "loki.split_line")["data"] == {"type": "split_line"}


def test_dashboard_state_becomes_status_changed(project, watched):
    state = {"mode": "autonomous", "phase": "DEVELOPMENT", "iteration": 3,
             "tasks": {"pending": [1, 2], "inProgress": [], "completed": [1]}}  # fmt: skip
    tmp = project / ".loki" / "dashboard-state.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, project / ".loki" / "dashboard-state.json")
    data = next_topic(watched, "status.changed")["data"]
    assert data == {
        "mode": "autonomous",
        "phase": "DEVELOPMENT",
        "iteration": 3,
        "tasks": {"pending": 2, "inProgress": 0, "completed": 1},
    }


def test_a_project_folder_removed_and_recreated_is_followed(lokid, project, watched):
    shutil.rmtree(project)
    assert next_topic(watched, "project.missing")["data"] == {"path": str(project)}
    assert call(lokid, "project.status", project)["missing"] is True
    (project / ".loki").mkdir(parents=True)
    next_topic(watched, "project.restored")
    wait_until(lambda: lokid.log().count("watching 1 project") >= 2, what="the watch to resume")
    (project / ".loki" / "PAUSE").touch()
    next_topic(watched, "signal.pause")


def test_a_loki_folder_created_later_is_watched(lokid, tmp_short):
    bare = tmp_short / "bare"
    bare.mkdir()
    with lokid.client() as client:
        client.call("subscribe", {"topics": ["signal.*"]})
        assert client.call("project.add", {"path": str(bare)})["project"]["hasLoki"] is False
        (bare / ".loki").mkdir()
        wait_until(lambda: "watching 1 project" in lokid.log(), what="the new .loki")
        (bare / ".loki" / "PAUSE").touch()
        assert next_topic(client, "signal.pause")["project"] == str(bare)


def test_fifty_projects_at_once(lokid, tmp_short):
    projects = []
    for i in range(50):
        path = tmp_short / f"p{i:02d}"
        (path / ".loki").mkdir(parents=True)
        projects.append(path)
    with lokid.client() as client:
        client.call("subscribe", {"topics": ["signal.pause"]})
        for path in projects:
            client.call("project.add", {"path": str(path)})
        wait_until(lambda: "watching 50 project" in lokid.log(), what="50 watched")
        for path in projects:
            (path / ".loki" / "PAUSE").touch()
        seen = {client.next_event(timeout=10)["project"] for _ in range(50)}
    assert seen == {str(p) for p in projects}
    listed = lokid.call("project.list")["projects"]
    assert len(listed) == 50 and all(p["watched"] for p in listed)


def test_the_watched_set_survives_a_restart(tmp_short, project):
    first = Lokid(tmp_short).start()
    first.call("project.add", {"path": str(project)})
    assert first.stop() == 0
    second = Lokid(tmp_short).start()
    try:
        assert [p["path"] for p in second.call("project.list")["projects"]] == [str(project)]
        wait_until(lambda: "watching 1 project" in second.log(), what="the restored watch")
        assert second.call("project.remove", {"path": str(project)}) == {"removed": True}
        assert second.call("project.list")["projects"] == []
    finally:
        second.kill()


def test_shutdown_does_not_wait_for_the_watcher(lokid, project, watched):
    started = time.monotonic()
    lokid.signal(signal.SIGTERM)
    assert lokid.proc.wait(10) == 0
    assert time.monotonic() - started < 3, "watchfiles' 5 s cancel wait was not avoided"


def test_project_status_gathers_everything(lokid, project, watched):
    call(lokid, "queue.enqueue", project, task={"type": "eng", "payload": {}})
    (project / ".loki" / "signals" / "DOCS_NEEDED").touch()
    next_topic(watched, "signal.docs-needed")
    status = call(lokid, "project.status", project)
    assert status["queue"]["pending"] == 1
    assert status["signals"] == ["DOCS_NEEDED"]
    assert (status["paused"], status["stopping"], status["missing"]) == (False, False, False)
    assert [e["topic"] for e in status["events"]][-1] == "signal.docs-needed"


def test_lokictl_project_commands_and_status(lokid, project):
    def ctl(*args: str) -> str:
        done = lokictl(lokid, project, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert ctl("project", "add").startswith(f"watching {project}")
    assert ctl("pause").startswith("paused")
    status = json.loads(ctl("--json", "status"))
    assert status["project"]["paused"] is True and status["project"]["path"] == str(project)
    text = ctl("status")
    assert f"project {project}  [paused]" in text and "breakers: all closed" in text
    assert ctl("resume").strip() == "resumed (removed .loki/PAUSE, .loki/lokid/PAUSE)"
    assert not (project / ".loki" / "PAUSE").exists()
    assert str(project) in ctl("project", "list")
    assert ctl("project", "remove").strip() == f"removed {project}"


def test_a_signal_made_right_after_adding_a_project_is_not_lost(lokid, project):
    """Between `project.add` and the watch being in place there is a window; what the
    folder holds when the watch begins is announced."""
    with lokid.client() as client:
        client.call("subscribe", {"topics": ["signal.*"], "project": str(project)})
        client.call("project.add", {"path": str(project)})
        (project / ".loki" / "PAUSE").touch()  # at once, no waiting for the watcher
        assert next_topic(client, "signal.pause")["data"] == {"file": "PAUSE"}


def _inotify_inodes(pid: int) -> set[int]:
    """The inodes of every folder the process has an inotify watch on (Linux fdinfo)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in info.splitlines():
            if line.startswith("inotify "):
                fields = dict(word.split(":", 1) for word in line.split()[1:])
                inodes.add(int(fields["ino"], 16))
    return inodes


def test_the_database_folder_is_not_watched(lokid, project, watched):
    """Every commit writes `.loki/lokid/lokid.db-wal`; a watch on that folder would wake
    the watcher each time. `.loki/state/` is not watched either: its one file of interest
    is polled instead (see the PRD test)."""
    call(lokid, "queue.enqueue", project, task={"type": "eng", "payload": {}})
    (project / ".loki" / "signals" / "HUMAN_INPUT").write_text("go")
    next_topic(watched, "signal.human-input")
    watched_inodes = _inotify_inodes(lokid.proc.pid)
    loki = project / ".loki"
    assert {loki.stat().st_ino, (loki / "signals").stat().st_ino} <= watched_inodes
    assert (loki / "lokid" / "lokid.db").exists()
    assert (loki / "lokid").stat().st_ino not in watched_inodes
    (loki / "state").mkdir(exist_ok=True)
    assert (loki / "state").stat().st_ino not in _inotify_inodes(lokid.proc.pid)


def test_a_folder_made_later_is_watched_from_its_first_file(project, watched):
    """The folder's first file is written before its watch can exist; it still counts,
    and so do later changes in it."""
    config = project / ".loki" / "config"
    config.mkdir()
    (config / "circuit-breakers.yaml").write_text("defaults: {failureThreshold: many}\n")
    assert "failureThreshold" in next_topic(watched, "config.invalid")["data"]["error"]
    (config / "circuit-breakers.yaml").write_text("defaults: {failureThreshold: 2}\n")
    next_topic(watched, "config.reloaded")
    shutil.rmtree(project / ".loki" / "signals")
    (project / ".loki" / "signals").mkdir()
    (project / ".loki" / "signals" / "BUDGET_EXCEEDED").write_text("{}")
    assert next_topic(watched, "signal.budget-exceeded")["data"]["present"] is True


def test_what_changes_while_the_watcher_restarts_is_caught_up(lokid, project, watched, tmp_short):
    """Adding a project restarts the watcher; lines appended meanwhile to another
    project's events.jsonl each become exactly one event, in order."""
    log = project / ".loki" / "events.jsonl"
    for i in range(6):
        (tmp_short / f"other{i}" / ".loki").mkdir(parents=True)
        lokid.call("project.add", {"path": str(tmp_short / f"other{i}")})
        with open(log, "a") as f:  # at once: while the watcher restarts
            f.write(json.dumps({"type": "step", "i": i}) + "\n")
    seen = [next_topic(watched, "loki.step")["data"]["i"] for _ in range(6)]
    assert seen == list(range(6))
    (project / ".loki" / "PAUSE").touch()  # a marker: no step may come twice before it
    while (event := next_topic(watched, "*"))["topic"] != "signal.pause":
        assert event["topic"] != "loki.step", event
