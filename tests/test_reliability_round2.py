"""Robustness round 2 (issue 15), each point against a real lokid and real files.

Data loss: a deleted task never comes back from lokid's own old view; a database deleted or
replaced under lokid (or its WAL) is refused, never acknowledged into. One project never
takes the daemon down: unusable files, FIFOs, corrupt databases. Clear errors instead of
`internal`. (Points 7, 8, 9's enqueue_many and 11 are with the throughput work.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from lokictl import Client, DaemonError
from support import Lokid, call, no_engine, wait_until

REPORT = {"decisionReport": "done"}


def start(root: Path, **env: str) -> Lokid:
    return Lokid(root, env={"LOKID_LOG_LEVEL": "info", **no_engine(root), **env}).start()


def view_ids(project: Path, name: str) -> list[str]:
    path = project / ".loki" / "queue" / name
    try:
        return [e.get("id") for e in json.loads(path.read_bytes())]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def enqueue(lokid: Lokid, project: Path, n: int, key: str = "n") -> str:
    return call(lokid, "queue.enqueue", project, task={"payload": {key: n}})["id"]


def code_of(fn) -> str:
    try:
        fn()
    except DaemonError as err:
        return err.code
    return "ok"


# -- 1. a deleted task never comes back -------------------------------------------------


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_deleted_task_never_comes_back_from_an_old_view(tmp_short, project, how):
    lokid = start(tmp_short, LOKID_VIEW_DELAY="1")
    task = {"id": "doomed", "type": "eng", "maxRetries": 1, "payload": {"x": 1}}
    call(lokid, "queue.enqueue", project, task=task)
    wait_until(lambda: view_ids(project, "pending.json") == ["doomed"], what="pending.json")
    call(lokid, "queue.claim", project, agent="a", capabilities=["eng"])
    call(lokid, "queue.fail", project, id="doomed", agent="a", error="bad")
    call(lokid, "dlq.delete", project, id="doomed", note="not needed")
    assert lokid.stop(how) == (0 if how == signal.SIGTERM else -signal.SIGKILL)
    if how == signal.SIGTERM:  # a clean stop leaves the views equal to the database
        for name in ("pending.json", "in-progress.json", "dead-letter.json", "failed.json"):
            assert view_ids(project, name) == [], name
    again = start(tmp_short)
    try:
        again.call("project.add", {"path": str(project)})
        assert call(again, "queue.import", project)["imported"] == 0
        with pytest.raises(DaemonError) as info:
            call(again, "queue.get", project, id="doomed")
        assert info.value.code == "not_found"
        assert call(again, "queue.stats", project)["states"]["pending"] == 0
    finally:
        again.kill()


# -- 2, 3. a database deleted or replaced under lokid -----------------------------------


def test_loki_deleted_under_lokid_is_refused_then_started_anew(tmp_short, project):
    lokid = start(tmp_short)
    events = lokid.client()
    events.call("subscribe", {"topics": ["queue.store-lost"]})
    acked = [
        call(lokid, "queue.enqueue", project, task={"payload": {"n": i}})["id"] for i in range(5)
    ]
    shutil.rmtree(project / ".loki")
    refused = code_of(lambda: call(lokid, "queue.enqueue", project, task={"payload": {"n": 9}}))
    assert refused == "unavailable"
    lost = events.next_event(timeout=10)
    assert lost["data"]["file"] == str(project / ".loki" / "lokid" / "lokid.db")
    # The next operation starts a new database on disk: what it acknowledges survives.
    acked = [
        call(lokid, "queue.enqueue", project, task={"payload": {"m": i}})["id"] for i in range(5)
    ]
    lokid.stop(signal.SIGKILL)
    again = start(tmp_short)
    try:
        for task_id in acked:
            assert call(again, "queue.get", project, id=task_id)["state"] == "pending"
    finally:
        again.kill()
        events.close()


def test_a_deleted_wal_loses_nothing_acknowledged(tmp_short, project):
    """Its contents are still readable through lokid's open handle: lokid saves them into
    the database file and starts a new WAL, so what it acknowledged, before and after,
    survives a SIGKILL."""
    lokid = start(tmp_short)
    acked = [enqueue(lokid, project, i) for i in range(5)]
    (project / ".loki" / "lokid" / "lokid.db-wal").unlink()
    acked += [enqueue(lokid, project, i, "w") for i in range(5)]
    assert (project / ".loki" / "lokid" / "lokid.db-wal").exists(), "a new WAL"
    lokid.stop(signal.SIGKILL)
    again = start(tmp_short)
    try:
        got = {t["id"] for t in call(again, "queue.list", project)["tasks"]}
        assert set(acked) <= got, "acknowledged before the WAL went: still there"
    finally:
        again.kill()


# -- 4. one project's files never take the daemon down ----------------------------------


def _long_project(root: Path) -> Path:
    """A project folder whose `.loki/events.jsonl` path is over PATH_MAX (4096)."""
    fd = os.open(root, os.O_RDONLY)
    path = root
    try:
        while len(str(path)) < 4096 - 40:
            name = "d" * 200
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            path = path / name
        os.mkdir(".loki", dir_fd=fd)
    finally:
        os.close(fd)
    return path


def test_unusable_project_files_mark_the_project_and_the_rest_is_served(tmp_short):
    good = tmp_short / "good"
    (good / ".loki").mkdir(parents=True)
    loop = tmp_short / "loop"
    (loop / ".loki").mkdir(parents=True)
    os.symlink("b", loop / ".loki" / "events.jsonl")
    os.symlink("events.jsonl", loop / ".loki" / "b")  # events.jsonl -> b -> events.jsonl
    locked = tmp_short / "locked"
    (locked / ".loki" / "config").mkdir(parents=True)
    deep = tmp_short / "x"
    deep.mkdir()
    deep = _long_project(deep)
    lokid = Lokid(tmp_short, env={**no_engine(tmp_short)}, permissions_apply=True).start()
    try:
        for folder in (good, loop, locked):
            lokid.call("project.add", {"path": str(folder)})
        os.chmod(locked / ".loki", 0)  # say, a .loki written by a root container
        # the project path itself is fine; its .loki/events.jsonl is over PATH_MAX
        try:
            lokid.call("project.add", {"path": str(deep)})
        except DaemonError as err:
            assert err.code != "internal", err
        (loop / ".loki" / "STOP").touch()  # a change in the looped project: its tail reads
        wait_until(lambda: call(lokid, "project.status", locked)["problem"], what="the problem")
        assert "permission denied" in call(lokid, "project.status", locked)["problem"].lower()
        # The watcher still serves the others: a signal in the good project arrives.
        with lokid.client() as client:
            client.call("subscribe", {"topics": ["signal.*"], "project": str(good)})
            (good / ".loki" / "PAUSE").touch()
            assert client.next_event(timeout=10)["topic"] == "signal.pause"
        # And a restart (every project still in the saved set) comes up and serves.
        assert lokid.stop() == 0
        lokid.start()
        assert call(lokid, "queue.enqueue", good, task={"payload": {}})["id"]
    finally:
        os.chmod(locked / ".loki", 0o755)
        lokid.kill()
    assert " ERROR " not in lokid.log(), lokid.log()[-3000:]


# -- 5. a FIFO never blocks the daemon ---------------------------------------------------


FIFOS = [
    "signals/HUMAN_INPUT",
    "dashboard-state.json",
    "events.jsonl",
    "config/circuit-breakers.yaml",
    "PAUSE",
]


def test_a_fifo_in_a_project_never_blocks_the_daemon(tmp_short, project):
    lokid = start(tmp_short)
    lokid.call("project.add", {"path": str(project)})
    call(lokid, "queue.enqueue", project, task={"payload": {}})
    for name in FIFOS:
        path = project / ".loki" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
    lokid.signal(signal.SIGHUP)  # re-reads circuit-breakers.yaml: a FIFO there too
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # the watcher reacts to each; every answer is quick
        start_at = time.monotonic()
        assert lokid.call("ping")
        assert time.monotonic() - start_at < 1
    status = call(lokid, "project.status", project)
    assert status["dashboard"] is None
    assert code_of(lambda: call(lokid, "signal.pause", project)) in ("ok", "unavailable")
    assert lokid.stop() == 0, "SIGTERM is honoured: nothing is stuck in an open()"


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "loop"])
def test_queue_files_that_are_no_files_never_block_views_or_the_stop(tmp_short, project, kind):
    """Loki Mode's queue files are lokid's to write too: a FIFO there (opening it would wait
    for a writer), an endless device or a symlink loop is skipped, the other files are still
    written, SIGTERM still ends lokid at once, and the file is written again once mended."""
    lokid = start(tmp_short, LOKID_VIEW_DELAY="0")
    lokid.call("project.add", {"path": str(project)})
    queue = project / ".loki" / "queue"
    queue.mkdir(parents=True, exist_ok=True)
    bad = ["in-progress.json", "completed.json"]
    for name in bad:
        if kind == "fifo":
            os.mkfifo(queue / name)
        elif kind == "dev-zero":
            os.symlink("/dev/zero", queue / name)
        else:
            os.symlink(name, queue / name)
    done = enqueue(lokid, project, 1)
    call(lokid, "queue.claim", project, agent="a", capabilities=["general"])
    call(lokid, "queue.complete", project, id=done, agent="a", result=REPORT)
    waiting = enqueue(lokid, project, 2)
    wait_until(lambda: view_ids(project, "pending.json") == [waiting], what="pending.json")
    for name in bad:
        os.unlink(queue / name)  # mended: an ordinary file again
        (queue / name).write_text("[]")
    call(lokid, "queue.claim", project, agent="a", capabilities=["general"])
    wait_until(lambda: view_ids(project, "completed.json") == [done], what="completed.json")
    wait_until(lambda: view_ids(project, "in-progress.json") == [waiting], what="in-progress")
    for name in bad:  # bad again, and a stop while lokid still has them to write
        os.unlink(queue / name)
        os.mkfifo(queue / name)
    call(lokid, "queue.fail", project, id=waiting, agent="a", error="x")
    started = time.monotonic()
    assert lokid.stop() == 0
    assert time.monotonic() - started < 10, "the stop waited on a file"


# -- 6. one corrupt database stops only its own project ---------------------------------


def test_a_corrupt_database_fails_its_own_project_only(tmp_short, project):
    other = tmp_short / "other"
    (other / ".loki").mkdir(parents=True)
    lokid = start(tmp_short, LOKID_VIEW_DELAY="0")
    for i in range(200):
        call(lokid, "queue.enqueue", project, task={"payload": {"n": i, "pad": "x" * 500}})
    call(lokid, "queue.enqueue", other, task={"payload": {}})
    db = project / ".loki" / "lokid" / "lokid.db"
    with open(db, "r+b") as f:  # ruin the pages behind the header
        f.seek(4096)
        f.write(os.urandom(64 * 1024))
    for _ in range(20):
        got = code_of(lambda: call(lokid, "queue.list", project, limit=1000))
        assert got in ("ok", "unavailable"), got
        got = code_of(lambda: call(lokid, "queue.enqueue", project, task={"payload": {"z": 1}}))
        assert got in ("ok", "unavailable"), got
    assert lokid.proc.poll() is None, lokid.log()[-3000:]
    assert call(lokid, "queue.enqueue", other, task={"payload": {"still": "served"}})["id"]
    assert lokid.stop() == 0


# -- 10. a file that never ends ----------------------------------------------------------


def test_dashboard_state_pointing_at_dev_zero_is_not_read(tmp_short, project):
    lokid = start(tmp_short)
    lokid.call("project.add", {"path": str(project)})
    os.symlink("/dev/zero", project / ".loki" / "dashboard-state.json")
    assert call(lokid, "project.status", project)["dashboard"] is None
    time.sleep(0.3)  # the watcher has seen it (5 ms step); it must not have read it
    assert lokid.proc.poll() is None
    assert lokid.call("ping")


# -- 12, 13. values that cannot be dates -------------------------------------------------


@pytest.mark.parametrize("error", ["Retry-After: 100000000000", "Retry-After: 1000000000000000000"])
def test_a_huge_retry_after_is_capped_at_a_day(lokid, project, error):
    call(lokid, "queue.enqueue", project, task={"id": "t", "payload": {}})
    call(lokid, "queue.claim", project, agent="a", capabilities=["general"])
    done = call(lokid, "queue.fail", project, id="t", agent="a", error=error)
    assert done["state"] == "pending"
    from lokid.wire.times import parse_iso

    assert parse_iso(done["task"]["availableAt"]) <= time.time() + 24 * 3600 + 60


@pytest.mark.parametrize("value", [".inf", "1e17"])
def test_breaker_durations_out_of_range_are_refused_with_key_and_line(lokid, project, value):
    config = project / ".loki" / "config"
    config.mkdir()
    (config / "circuit-breakers.yaml").write_text(f"defaults:\n  halfOpenAfter: {value}\n")
    reply = call(lokid, "breaker.reload", project)
    assert reply["reloaded"] is False
    assert "line 2" in reply["error"] and "halfOpenAfter" in reply["error"]


# -- 14. a project whose path holds `.loki` ----------------------------------------------


def test_a_project_under_a_dot_loki_folder_gets_its_events(tmp_short, lokid):
    project = tmp_short / "x" / ".loki" / "app"
    (project / ".loki").mkdir(parents=True)
    with lokid.client() as client:
        client.call("subscribe", {"topics": ["signal.*"], "project": str(project)})
        lokid.call("project.add", {"path": str(project)})
        (project / ".loki" / "PAUSE").touch()
        assert client.next_event(timeout=10)["topic"] == "signal.pause"


# -- 15. bad input is invalid_params or unavailable, never internal ----------------------


def test_non_string_map_keys_and_a_huge_cursor_are_invalid_params(lokid, project):
    with Client.connect(lokid.socket) as client:
        for payload in ({True: 1}, {"a": {None: 2}}):
            body = {"project": str(project), "task": {"payload": payload}}
            with pytest.raises(DaemonError) as info:
                client.call("queue.enqueue", body)
            assert info.value.code == "invalid_params", info.value
    with pytest.raises(DaemonError) as info:
        call(lokid, "queue.list", project, cursor=str(2**63))
    assert info.value.code == "invalid_params"


def test_unreadable_and_looping_queue_folders_are_unavailable(tmp_short, project):
    lokid = Lokid(tmp_short, env=no_engine(tmp_short), permissions_apply=True).start()
    try:
        call(lokid, "queue.enqueue", project, task={"payload": {}})
        queue = project / ".loki" / "queue"
        queue.mkdir(exist_ok=True)
        os.chmod(queue, 0)
        try:
            assert code_of(lambda: call(lokid, "queue.import", project)) == "unavailable"
            assert code_of(lambda: call(lokid, "project.status", project)) == "ok"
        finally:
            os.chmod(queue, 0o755)
        shutil.rmtree(queue)
        os.symlink("queue", queue)  # a symlink loop where the folder should be
        assert code_of(lambda: call(lokid, "queue.import", project)) == "unavailable"
        assert code_of(lambda: call(lokid, "project.status", project)) == "ok"
    finally:
        lokid.kill()
    assert "internal error" not in lokid.log()


# -- 16. smaller ones ----------------------------------------------------------------------


def test_an_empty_list_is_no_decision_report(lokid, project):
    call(lokid, "queue.enqueue", project, task={"id": "t", "payload": {}})
    call(lokid, "queue.claim", project, agent="a", capabilities=["general"])
    with pytest.raises(DaemonError) as info:
        call(lokid, "queue.complete", project, id="t", agent="a", result={"decisionReport": []})
    assert info.value.code == "invalid_params"


def test_a_task_id_with_newlines_stays_on_one_line_of_the_decision_log(lokid, project):
    sly = "t1\n## 2026-01-01 delete everything"
    call(lokid, "queue.enqueue", project, task={"id": sly, "type": "a\nb", "maxRetries": 1})
    call(lokid, "queue.claim", project, agent="a", capabilities=["a\nb"])
    call(lokid, "queue.fail", project, id=sly, agent="a", error="x")
    call(lokid, "dlq.delete", project, id=sly, note="line one\nline two")
    log = next((project / ".loki" / "logs" / "decisions").glob("dlq-review-*.md")).read_text()
    headers = [line for line in log.splitlines() if line.startswith("## ")]
    assert len(headers) == 1 and "\\n" in headers[0]


def test_a_subscribe_filter_with_a_trailing_slash_is_refused(lokid, project):
    with pytest.raises(DaemonError) as info:
        lokid.call("subscribe", {"topics": ["*"], "project": f"{project}/"})
    assert info.value.code == "invalid_params"


def test_zero_backoff_retries_at_once(lokid, project):
    call(lokid, "queue.enqueue", project, task={"id": "t", "backoffSeconds": 0})
    call(lokid, "queue.claim", project, agent="a", capabilities=["general"])
    call(lokid, "queue.fail", project, id="t", agent="a", error="flaky")
    assert call(lokid, "queue.claim", project, agent="a", capabilities=["general"])["task"]


def test_two_daemons_sharing_a_state_folder_keep_each_others_projects(tmp_short):
    first, second = tmp_short / "one", tmp_short / "two"
    for folder in (first, second):
        (folder / ".loki").mkdir(parents=True)
    state = {"XDG_STATE_HOME": str(tmp_short / "shared-state")}
    a = Lokid(tmp_short / "a", env=state)
    b = Lokid(tmp_short / "b", env=state)
    for d in (a, b):
        d.root.mkdir()
        d.env.update(state)
        d.start()
    try:
        a.call("project.add", {"path": str(first)})
        b.call("project.add", {"path": str(second)})
        saved = json.loads((tmp_short / "shared-state" / "lokid" / "projects.json").read_text())
        assert saved["projects"] == sorted([str(first), str(second)])
    finally:
        a.kill()
        b.kill()


def test_temp_files_of_a_killed_lokid_are_removed(tmp_short, project):
    queue = project / ".loki" / "queue"
    queue.mkdir()
    dead = 2**22 + 12345  # no such pid
    stale = queue / f".pending.json.lokid-{dead}.tmp"
    stale.write_text("[]")
    lokid = start(tmp_short)
    try:
        call(lokid, "queue.enqueue", project, task={"payload": {}})
        wait_until(lambda: not stale.exists(), what="the stale temp file gone")
    finally:
        lokid.kill()
