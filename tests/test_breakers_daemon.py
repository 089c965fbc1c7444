"""Circuit breakers through a real daemon: config reloads, restarts, concurrent probes."""

import json
import signal
import threading
from pathlib import Path

import pytest
from pgenv import both_stores

from support import Lokid, call, run_threads, wait_until

REPORT = {"decisionReport": {"why": "ok"}}


@pytest.fixture
def project(project: Path) -> Path:
    (project / ".loki" / "config").mkdir()
    return project


def write_config(project: Path, text: str) -> None:
    (project / ".loki" / "config" / "circuit-breakers.yaml").write_text(text)


def fail_once(lokid, project, task_type: str) -> None:
    task = {"type": task_type, "payload": {"n": threading.get_ident(), "r": id(object())}}
    task["maxRetries"] = 50
    task["backoffSeconds"] = 3600  # out of the way of the next fail_once claim, however slow
    task_id = call(lokid, "queue.enqueue", project, task=task)["id"]
    claimed = wait_until(
        lambda: call(lokid, "queue.claim", project, agent="a", capabilities=[task_type])["task"],
        what="a claimable task",
    )
    assert claimed["id"] == task_id
    call(lokid, "queue.fail", project, id=task_id, agent="a", error="crashed")


@both_stores
def test_a_reload_applies_a_good_file_and_refuses_a_bad_one(lokid, project):
    write_config(project, "defaults: {failureThreshold: 2}\n")
    with lokid.client() as watcher:
        watcher.call("subscribe", {"topics": ["config.*", "breaker.*"], "project": str(project)})
        assert call(lokid, "breaker.reload", project) == {"reloaded": True, "error": None}
        assert watcher.next_event(timeout=10)["topic"] == "config.reloaded"
        write_config(project, "defaults:\n  failureThreshold: 1\n  bogus: 3\n")
        refused = call(lokid, "breaker.reload", project)
        assert refused["reloaded"] is False
        event = watcher.next_event(timeout=10)
        assert event["topic"] == "config.invalid"
        assert "bogus" in event["data"]["error"] and "line 3" in event["data"]["error"]
        # The previous configuration (threshold 2) is still in force.
        fail_once(lokid, project, "eng")
        assert call(lokid, "breaker.list", project)["breakers"]["eng"]["state"] == "closed"
        fail_once(lokid, project, "eng")
        opened = watcher.next_event(timeout=10)
        while opened["topic"].startswith("config."):  # the watcher's own reload, late
            opened = watcher.next_event(timeout=10)
    assert (opened["topic"], opened["data"]["type"]) == ("breaker.opened", "eng")
    blocked = call(lokid, "queue.claim", project, agent="a", capabilities=["eng"])
    assert blocked["task"] is None and blocked["blocked"]["eng"]["state"] == "open"


@both_stores
def test_sighup_reloads_every_open_project(lokid, project):
    # lokid now has the project's queue open (a read would not open one: nothing to read)
    call(lokid, "queue.enqueue", project, task={"type": "docs", "payload": {}})
    write_config(project, "overrides: {eng: {failureThreshold: 1}}\n")
    with lokid.client() as watcher:
        watcher.call("subscribe", {"topics": ["config.reloaded"], "project": str(project)})
        lokid.signal(signal.SIGHUP)
        sources = {watcher.next_event(timeout=10)["project"] for _ in range(2)}
    assert str(project) in sources
    fail_once(lokid, project, "eng")
    assert call(lokid, "breaker.list", project)["breakers"]["eng"]["state"] == "open"


@both_stores
def test_breaker_state_survives_a_restart_and_is_written_for_loki_mode(
    tmp_short, project, store_env
):
    write_config(project, "defaults: {failureThreshold: 1, halfOpenAfter: 3600}\n")
    lokid = Lokid(tmp_short, env=store_env).start()
    fail_once(lokid, project, "ops")
    before = call(lokid, "breaker.list", project)["breakers"]["ops"]
    state_file = project / ".loki" / "state" / "circuit-breakers.json"
    wait_until(
        lambda: (
            state_file.exists()
            and json.loads(state_file.read_text())["circuitBreakers"].get("ops", {}).get("state")
            == "open"
        ),
        what="the state file",
    )
    assert set(json.loads(state_file.read_text())["circuitBreakers"]["ops"]) == {
        "state",
        "failures",
        "lastFailure",
        "openedAt",
        "halfOpenAt",
    }
    assert lokid.stop() == 0
    again = Lokid(tmp_short, env=store_env).start()
    try:
        after = call(again, "breaker.list", project)["breakers"]["ops"]
        assert after == before
        claim = call(again, "queue.claim", project, agent="b", capabilities=["ops"])
        assert claim["blocked"]["ops"]["until"] == before["halfOpenAt"]
    finally:
        again.kill()


@both_stores
def test_three_probes_among_five_concurrent_claimers(lokid, project):
    write_config(
        project,
        "defaults: {failureThreshold: 1, halfOpenAfter: 0.3, halfOpenRequests: 3}\n",
    )
    fail_once(lokid, project, "api")
    tasks = [{"type": "api", "payload": {"n": i}} for i in range(10)]
    call(lokid, "queue.enqueue_many", project, tasks=tasks)
    with lokid.client() as watcher:
        watcher.call("subscribe", {"topics": ["breaker.half-open"], "project": str(project)})
        if call(lokid, "breaker.list", project)["breakers"]["api"]["state"] != "half-open":
            assert watcher.next_event(timeout=10)["data"]["type"] == "api"
    results, barrier = [], threading.Barrier(5)

    def claimer(i: int) -> None:
        with lokid.client() as c:
            barrier.wait()
            params = {"project": str(project), "agent": f"probe-{i}", "capabilities": ["api"]}
            results.append(c.call("queue.claim", params))

    run_threads(claimer, [(i,) for i in range(5)])
    granted = [r["task"] for r in results if r["task"] is not None]
    assert len(granted) == 3
    assert all(r["blocked"]["api"]["state"] == "half-open" for r in results if r["task"] is None)
    probe = granted[0]
    call(lokid, "queue.complete", project, id=probe["id"], agent=probe["claimedBy"], result=REPORT)
    assert call(lokid, "breaker.list", project)["breakers"]["api"]["state"] == "closed"


@both_stores
def test_trip_and_reset_by_hand(lokid, project):
    call(lokid, "queue.enqueue", project, task={"type": "deploy", "payload": {}})
    tripped = call(lokid, "breaker.trip", project, type="deploy", reason="freeze")["breaker"]
    assert (tripped["state"], tripped["forced"], tripped["reason"]) == ("open", True, "freeze")
    claim = call(lokid, "queue.claim", project, agent="a", capabilities=["deploy"])
    assert claim["blocked"]["deploy"] == {"state": "open", "until": None}
    assert call(lokid, "breaker.reset", project, type="deploy")["breaker"]["state"] == "closed"
    assert call(lokid, "queue.claim", project, agent="a", capabilities=["deploy"])["task"]
