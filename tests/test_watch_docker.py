"""`.loki/STOP` reaches the container lifecycle, on a real engine (dockerenv.py)."""

from __future__ import annotations

import pytest
from dockerenv import docker_env, engine
from test_runs import Events, project, spawn, start

from support import wait_until

__all__ = ["docker_env", "engine"]  # session fixtures used here

pytestmark = pytest.mark.docker


def running(engine, name: str) -> bool:
    return any(c.name == name for c in engine.client.containers.list())


def test_stop_stops_a_run_that_ignores_it(engine, tmp_short):
    engine.publish()
    lokid = spawn(engine, tmp_short, LOKID_STOP_SIGNAL_GRACE="0.5")
    try:
        path = project(tmp_short, "hung")
        name = start(lokid, path)["container"]
        lokid.call("project.add", {"path": path})
        wait_until(lambda: "watching 1 project" in lokid.log(), what="the watcher")
        events = Events(lokid)
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
    finally:
        lokid.kill()


def test_stop_after_the_run_exited_by_itself_is_a_quiet_no_op(engine, tmp_short):
    engine.publish()
    lokid = spawn(engine, tmp_short, LOKID_STOP_SIGNAL_GRACE="0.5")
    try:
        path = project(tmp_short, "polite")
        name = start(lokid, path)["container"]
        lokid.call("project.add", {"path": path})
        wait_until(lambda: "watching 1 project" in lokid.log(), what="the watcher")
        events = Events(lokid)
        (tmp_short / "polite" / ".loki" / "STOP").touch()
        assert events.wait("run.exited", path)["data"]["container"] == name
        assert events.wait("signal.stop-done", path)["data"] == {"stopped": []}
        wait_until(lambda: not running(engine, name), what="the container gone")
    finally:
        lokid.kill()
