"""`.loki/STOP` as Loki Mode means it, reaching the runs lokid started, on a real engine
(dockerenv.py). The test image's `loki` waits for a STOP *file*, deletes it and exits, as
Loki Mode's runner does between iterations; with LOKI_IGNORE_STOP it never looks (a run in
the middle of a long iteration)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dockerenv import Events, project, spawn, start

from support import call, wait_until

pytestmark = pytest.mark.docker

GRACE = 0.5


def running(engine, name: str) -> bool:
    return any(c.name == name for c in engine.client.containers.list())


@pytest.fixture
def lokid(engine, tmp_short):
    engine.publish()
    daemon = spawn(engine, tmp_short, LOKID_STOP_FILE_GRACE=str(GRACE))
    yield daemon
    daemon.kill()


def watched_run(lokid, tmp_short, name: str, **env: str) -> tuple[str, str, Events]:
    """A watched project with a running container: (path, container, subscriber)."""
    path = project(tmp_short, name)
    container = start(lokid, path, env=env)["container"]
    loki = tmp_short / name / ".loki"
    wait_until((loki / "container-args").exists, what="the container to create .loki/")
    lokid.call("project.add", {"path": path})  # answers once .loki/ is under watch
    return path, container, Events(lokid)


def claim_answer(lokid, path: str) -> dict:
    return call(lokid, "queue.claim", path, agent="a", capabilities=["x"])


def test_lokid_stops_a_run_that_ignores_stop_then_deletes_stop(engine, lokid, tmp_short):
    path, name, events = watched_run(lokid, tmp_short, "hung", LOKI_IGNORE_STOP="1")
    stop = Path(path) / ".loki" / "STOP"
    stop.touch()
    assert events.wait("signal.stop", path)["data"] == {"file": "STOP"}
    assert claim_answer(lokid, path)["stopped"] is True
    done = events.wait("signal.stop-done", path)["data"]
    assert done == {"stopped": [name], "outcome": "stopped"}
    assert not running(engine, name)
    assert not stop.exists(), "deleted once the run is stopped, as `loki stop` does"
    assert claim_answer(lokid, path) == {"task": None}, "claims are no longer stopped"


def test_a_run_that_honours_stop_by_itself_is_left_alone(engine, lokid, tmp_short):
    path, name, events = watched_run(lokid, tmp_short, "polite")
    (tmp_short / "polite" / ".loki" / "STOP").touch()
    exited = events.wait("run.exited", path)["data"]
    assert exited == {"container": name, "exitCode": 0}, "it ended its iteration itself"
    done = events.wait("signal.stop-done", path)["data"]
    assert done == {"stopped": [], "outcome": "withdrawn"}
    wait_until(lambda: not running(engine, name), what="the container gone")


def test_stop_removed_before_the_grace_ends_cancels_lokids_stop(engine, lokid, tmp_short):
    """The dashboard's Stop, then Resume: STOP is gone again before the grace is over."""
    path, name, events = watched_run(lokid, tmp_short, "resumed", LOKI_IGNORE_STOP="1")
    stop = Path(path) / ".loki" / "STOP"
    stop.touch()
    events.wait("signal.stop", path)
    stop.unlink()
    done = events.wait("signal.stop-done", path)["data"]
    assert done == {"stopped": [], "outcome": "withdrawn"}
    assert running(engine, name)


def test_stop_never_stops_a_run_that_started_after_it(engine, lokid, tmp_short):
    path = project(tmp_short, "later")
    loki = Path(path) / ".loki"
    loki.mkdir()
    lokid.call("project.add", {"path": path})
    events = Events(lokid)
    (loki / "STOP").touch()
    events.wait("signal.stop", path)
    time.sleep(0.01)  # the container's start time must be after STOP's, whatever the clocks
    name = start(lokid, path, env={"LOKI_IGNORE_STOP": "1"})["container"]
    done = events.wait("signal.stop-done", path)["data"]
    assert done == {"stopped": [], "outcome": "no-run"}
    assert running(engine, name)
    assert (loki / "STOP").exists(), "not lokid's to delete: it stopped nothing"


def test_a_loki_mode_run_lokid_did_not_start_honours_stop_itself(engine, lokid, tmp_short):
    """Loki Mode's own `loki docker start` (no lokid labels) ends at its iteration's end:
    lokid must not kill it mid-iteration."""
    path = project(tmp_short, "theirs")
    loki = Path(path) / ".loki"
    loki.mkdir()
    shell_run = engine.client.containers.run(
        engine.image,
        name="loki-theirs-run",
        volumes={path: {"bind": "/workspace", "mode": "rw"}},
        environment={"LOKI_IGNORE_STOP": "1"},
        detach=True,
    )
    try:
        wait_until((loki / "container-args").exists, what="their container")
        lokid.call("project.add", {"path": path})
        events = Events(lokid)
        (loki / "STOP").touch()
        done = events.wait("signal.stop-done", path)["data"]
        assert done == {"stopped": [], "outcome": "no-run"}
        assert running(engine, "loki-theirs-run")
    finally:
        shell_run.remove(force=True)
