"""`.loki/STOP` reaches the container lifecycle, on a real engine (dockerenv.py)."""

from __future__ import annotations

import pytest
from dockerenv import Events, project, spawn, start

from support import wait_until

pytestmark = pytest.mark.docker


def running(engine, name: str) -> bool:
    return any(c.name == name for c in engine.client.containers.list())


@pytest.fixture
def lokid(engine, tmp_short):
    engine.publish()
    daemon = spawn(engine, tmp_short, LOKID_STOP_SIGNAL_GRACE="0.5")
    yield daemon
    daemon.kill()


def watched_run(lokid, tmp_short, name: str) -> tuple[str, str, Events]:
    """A watched project with a running container: (path, container, subscriber)."""
    path = project(tmp_short, name)
    container = start(lokid, path)["container"]
    loki = tmp_short / name / ".loki"
    wait_until((loki / "container-args").exists, what="the container to create .loki/")
    lokid.call("project.add", {"path": path})  # answers once .loki/ is under watch
    return path, container, Events(lokid)


def test_stop_stops_a_run_that_ignores_it(engine, lokid, tmp_short):
    path, name, events = watched_run(lokid, tmp_short, "hung")
    # A folder named STOP: lokid sees STOP, the test image's loki (which waits for a
    # *file*) does not, like a Loki Mode that hangs and never reads it.
    (tmp_short / "hung" / ".loki" / "STOP").mkdir()
    assert events.wait("signal.stop", path)["data"] == {"file": "STOP"}
    done = events.wait("signal.stop-done", path)
    assert done["data"] == {"stopped": [name]}
    assert not running(engine, name)
    assert lokid.call("queue.claim", {"project": path, "agent": "a", "capabilities": ["x"]})[
        "stopped"
    ]


def test_stop_after_the_run_exited_by_itself_is_a_quiet_no_op(engine, lokid, tmp_short):
    path, name, events = watched_run(lokid, tmp_short, "polite")
    (tmp_short / "polite" / ".loki" / "STOP").touch()
    assert events.wait("run.exited", path)["data"]["container"] == name
    assert events.wait("signal.stop-done", path)["data"] == {"stopped": []}
    wait_until(lambda: not running(engine, name), what="the container gone")
