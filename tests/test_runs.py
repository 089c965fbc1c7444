"""Container runs on a real Docker engine and registry (see dockerenv.py): no mocks.

Each test gets an emptied engine, a fresh lokid whose HOME (so `~/.loki/dashboard`) is
private, and project folders under a short temp dir. Waits are on conditions, never sleeps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from dockerenv import (
    DECOY_REPOSITORY,
    GH_SECRET,
    LOOKALIKE_REPOSITORY,
    SECRET,
    DockerEnv,
    Events,
    project,
    spawn,
    start,
)

from lokictl import Client, DaemonError
from support import Lokid, wait_until

pytestmark = pytest.mark.docker


def sha12(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:12]


@pytest.fixture
def lokid(engine: DockerEnv, tmp_short: Path):
    daemon = spawn(engine, tmp_short)
    yield daemon
    daemon.kill()


def run_json(path: str) -> Path:
    return Path(path) / ".loki" / "docker" / "run.json"


def registry(lokid: Lokid) -> dict[str, Any]:
    return json.loads((lokid.root / "home/.loki/dashboard/projects.json").read_text())["projects"]


def inspect(engine: DockerEnv, name: str) -> dict[str, Any] | None:
    try:
        return engine.client.api.inspect_container(name)
    except docker.errors.NotFound:
        return None


def running(engine: DockerEnv, name: str) -> bool:
    attrs = inspect(engine, name)
    return bool(attrs and attrs["State"]["Running"])


def stop_file(path: str, exit_code: int | None = None) -> None:
    loki = Path(path) / ".loki"
    if exit_code is not None:
        (loki / "EXIT_CODE").write_text(str(exit_code))
    (loki / "STOP").touch()


# -- start and stop ------------------------------------------------------------------------


def test_start_then_stop_removes_the_container_and_names_it(engine, lokid, tmp_short):
    engine.publish()
    path = project(tmp_short, "app")
    events = Events(lokid)
    result = start(lokid, path, args=["start", "--fast"])
    name = f"loki-{sha12(path)}"
    assert result["container"] == name and result["port"] is None and result["pulled"]
    assert events.wait("run.started", path)["data"]["container"] == name
    assert json.loads(run_json(path).read_text()) == {
        "container": name,
        "image": engine.image,
        "project_dir": path,
        "started_at": result["started_at"],
    }
    entry = registry(lokid)[sha12(path)]
    assert (entry["path"], entry["status"], entry["pid"]) == (path, "running", None)

    attrs = inspect(engine, name)
    env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
    assert attrs["Config"]["Labels"] == {"dev.loki.managed-by": "lokid", "dev.loki.project": path}
    assert attrs["Config"]["WorkingDir"] == "/workspace"
    assert attrs["Config"]["Cmd"] == ["start", "--fast"]
    assert [(m["Source"], m["Destination"], m["RW"]) for m in attrs["Mounts"]] == [
        (path, "/workspace", True)
    ]
    assert env["LOKI_DASHBOARD"] == "false" and env["LOKI_NO_NEW_SESSION"] == "1"
    assert env["LOKI_NOTIFICATIONS"] == "false" and env["LOKI_SKIP_PROJECT_REGISTRY"] == "1"
    assert env["ANTHROPIC_API_KEY"] == SECRET
    container_args = Path(path) / ".loki" / "container-args"
    wait_until(container_args.exists, 10, "the container to write into the project")
    assert container_args.read_text().strip() == "start --fast"

    assert lokid.call("run.stop", {"project": path}) == {"stopped": [name], "removed": []}
    assert inspect(engine, name) is None
    assert not run_json(path).exists()
    assert registry(lokid)[sha12(path)]["status"] == "stopped"
    assert events.wait("run.stopped", path)["data"] == {"containers": [name]}
    assert lokid.call("run.status", {"project": path}) == {"run": None}


def test_a_second_start_while_up_is_a_conflict_naming_the_container(engine, lokid, tmp_short):
    engine.publish()
    path = project(tmp_short, "app")
    name = start(lokid, path)["container"]
    with pytest.raises(DaemonError) as err:
        start(lokid, path)
    assert err.value.code == "conflict" and name in err.value.message
    assert err.value.data == {"container": name}


def test_a_cancelled_start_leaves_no_untracked_container(engine, lokid, tmp_short):
    engine.publish()
    for n, cancel_after in enumerate((None, "image.pull", "image.pruned")):
        path = project(tmp_short, f"c{n}")
        with lokid.client() as client:
            client.call("subscribe", {"topics": ["image.*"]})
            msgid = client.send("run.start", {"project": path})
            while cancel_after and client.next_event(timeout=20)["topic"] != cancel_after:
                pass
            client.cancel(msgid)
            with contextlib.suppress(DaemonError):
                client.result(msgid)
        name = f"loki-{sha12(path)}"
        if inspect(engine, name) is not None:
            assert run_json(path).exists()
            assert registry(lokid)[sha12(path)]["status"] == "running"
            assert lokid.call("run.stop", {"project": path})["stopped"] == [name]


def test_run_json_deleted_still_reaps_by_the_recomputed_name(engine, lokid, tmp_short):
    engine.publish()
    path = project(tmp_short, "app")
    name = start(lokid, path)["container"]
    run_json(path).unlink()
    lokid.kill()  # nothing lokid remembers may help either
    fresh = spawn(engine, tmp_short)
    try:
        assert fresh.call("run.stop", {"project": path})["stopped"] == [name]
        assert inspect(engine, name) is None
    finally:
        fresh.kill()


def test_a_container_the_shell_started_is_reaped_by_its_name(engine, lokid, tmp_short):
    """Loki Mode's own `docker run --name loki-<sha12>` carries no lokid label."""
    engine.publish()
    path = project(tmp_short, "app")
    name = f"loki-{sha12(path)}"
    engine.pull(engine.image)
    engine.client.containers.run(
        engine.image, name=name, detach=True, volumes=[f"{path}:/workspace"]
    )
    assert lokid.call("run.stop", {"project": path})["stopped"] == [name]
    assert inspect(engine, name) is None


def test_stop_in_x_leaves_y_running(engine, lokid, tmp_short):
    engine.publish()
    x, y = project(tmp_short, "x"), project(tmp_short, "y")
    x_name = start(lokid, x)["container"]
    y_name = start(lokid, y)["container"]
    # Even a run.json in X naming Y's container must not make X's stop touch Y.
    run_json(x).write_text(json.dumps({"container": y_name, "image": "", "project_dir": x}))
    assert lokid.call("run.stop", {"project": x})["stopped"] == [x_name]
    assert running(engine, y_name) and not running(engine, x_name)
    assert run_json(y).exists() and not run_json(x).exists()
    entries = registry(lokid)
    assert entries[sha12(y)]["status"] == "running"
    assert entries[sha12(x)]["status"] == "stopped"


def test_stop_all_stops_managed_and_repository_containers_only(engine, lokid, tmp_short):
    engine.publish()
    x, y, z = (project(tmp_short, n) for n in "xyz")
    names = [start(lokid, p)["container"] for p in (x, y)]
    shell_run = f"loki-{sha12(z)}"  # started by Loki Mode's shell, no labels
    engine.client.containers.run(engine.image, name=shell_run, detach=True)
    decoy = engine.ref(DECOY_REPOSITORY)
    engine.import_build(decoy)
    engine.client.containers.run(decoy, name="decoy", detach=True)

    result = lokid.call("run.stop", {"all": True})
    assert result == {"stopped": sorted([*names, shell_run]), "removed": []}
    assert running(engine, "decoy")
    assert all(inspect(engine, n) is None for n in (*names, shell_run))
    assert not run_json(x).exists() and not run_json(y).exists()


def test_a_missing_project_folder_is_not_found(engine, lokid, tmp_short):
    with pytest.raises(DaemonError) as err:
        start(lokid, str(tmp_short / "missing"))
    assert err.value.code == "not_found" and "does not exist" in err.value.message


def test_nothing_running_is_an_honest_empty_answer(engine, lokid, tmp_short):
    path = project(tmp_short, "idle")
    assert lokid.call("run.stop", {"project": path}) == {"stopped": [], "removed": []}
    assert lokid.call("run.stop", {"all": True}) == {"stopped": [], "removed": []}
    assert lokid.call("run.status", {"project": path}) == {"run": None}
    assert lokid.call("run.list") == {"runs": []}


# -- exits, restarts, the engine going away ------------------------------------------------


def test_a_container_that_exits_by_itself(engine, lokid, tmp_short):
    engine.publish()
    path = project(tmp_short, "app")
    events = Events(lokid)
    name = start(lokid, path)["container"]
    stop_file(path, exit_code=3)
    exited = events.wait("run.exited", path)
    assert exited["data"] == {"container": name, "exitCode": 3}
    assert not run_json(path).exists()
    assert registry(lokid)[sha12(path)]["status"] == "stopped"
    status = lokid.call("run.status", {"project": path})["run"]
    assert (status["container"], status["state"], status["exit_code"]) == (name, "exited", 3)
    logs = lokid.call("run.logs", {"project": path})
    assert "loki args: start" in logs["lines"] and "loki: STOP seen" in logs["lines"]
    # The exited container does not block the next run.
    assert start(lokid, path)["container"] == name
    assert running(engine, name)


def test_lokid_killed_and_restarted_adopts_the_running_container(engine, lokid, tmp_short):
    engine.publish()
    path = project(tmp_short, "app")
    name = start(lokid, path)["container"]
    lokid.kill()
    again = spawn(engine, tmp_short)
    try:
        events = Events(again)
        wait_until(lambda: again.call("daemon.status")["projects"] == [path], 10, "adoption")
        status = again.call("run.status", {"project": path})["run"]
        assert (status["container"], status["state"], status["managed"]) == (name, "running", True)
        stop_file(path, exit_code=0)
        assert events.wait("run.exited", path)["data"] == {"container": name, "exitCode": 0}
        assert not run_json(path).exists()
    finally:
        again.kill()


def test_restarted_lokid_removes_run_json_of_a_container_gone_meanwhile(engine, lokid, tmp_short):
    engine.publish()
    path = project(tmp_short, "app")
    name = start(lokid, path)["container"]
    lokid.kill()
    engine.client.api.remove_container(name, force=True)
    again = spawn(engine, tmp_short)
    try:
        wait_until(
            lambda: (
                not run_json(path).exists() and registry(again)[sha12(path)]["status"] == "stopped"
            ),
            15,  # a run.json under 5 s old may be a shell run about to start
            "reconcile to remove run.json and mark the registry entry stopped",
        )
    finally:
        again.kill()


def test_engine_stopped_answers_unavailable_and_lokid_stays_up(engine, lokid, tmp_short):
    if not engine.own_engine:
        pytest.skip("stops the engine: only one these tests started")
    engine.publish()
    path = project(tmp_short, "app")
    start(lokid, path)
    engine.stop_engine()
    try:
        for method, params in (("run.status", {"project": path}), ("run.start", {"project": path})):
            with pytest.raises(DaemonError) as err:
                lokid.call(method, params)
            assert err.value.code == "unavailable"
            assert engine.host in err.value.message
        assert lokid.call("ping")["time"]
    finally:
        engine.start_engine()
    # Back: the engine stopped the container on its way down; lokid reconciles.
    wait_until(lambda: not run_json(path).exists(), 20, "reconcile after the engine is back")
    assert lokid.call("run.status", {"project": path})["run"]["state"] == "exited"
    assert start(lokid, path)["container"] == f"loki-{sha12(path)}"


def test_two_concurrent_starts_in_two_projects_keep_both_registry_entries(engine, lokid, tmp_short):
    engine.publish()
    folder = lokid.root / "home/.loki/dashboard"
    folder.mkdir(parents=True)
    other = {"id": "0123456789ab", "path": "/elsewhere", "status": "active", "custom": [1, 2]}
    (folder / "projects.json").write_text(
        json.dumps({"version": "1.0", "projects": {other["id"]: other}})
    )
    paths = [project(tmp_short, f"p{i}") for i in range(2)]
    clients = [lokid.client() for _ in paths]
    ids = [c.send("run.start", {"project": p}) for c, p in zip(clients, paths, strict=True)]
    results = [c.result(i) for c, i in zip(clients, ids, strict=True)]
    assert all(running(engine, r["container"]) for r in results)
    entries = registry(lokid)
    assert entries[other["id"]] == other
    assert {entries[sha12(p)]["status"] for p in paths} == {"running"}


# -- images: pull and prune ----------------------------------------------------------------


def test_pull_removes_the_old_image_and_keeps_the_new_latest(engine, lokid, tmp_short):
    engine.publish()
    old = engine.pull(engine.image)
    new = engine.publish()
    path = project(tmp_short, "app")
    events = Events(lokid)
    result = start(lokid, path)
    assert result["image_id"] == new
    assert old not in engine.image_ids() and new in engine.image_ids()
    assert engine.client.api.inspect_image(engine.image)["Id"] == new
    pruned = events.wait("image.pruned", path)["data"]
    assert [r["id"] for r in pruned["removed"]] == [old]
    assert pruned["reclaimed_bytes"] > 0
    assert "image.pull" in events.topics()
    again = lokid.call("image.update")
    assert again["removed"] == [] and again["message"].startswith("nothing to reclaim")


def test_an_image_in_use_is_kept(engine, lokid, tmp_short):
    engine.publish()
    first = start(lokid, project(tmp_short, "a"))
    new = engine.publish()
    result = lokid.call("image.update")
    assert result["id"] == new and result["removed"] == []
    assert result["kept_in_use"] == [first["image_id"]]
    assert first["image_id"] in engine.image_ids()


def test_decoys_of_other_repositories_are_kept(engine, lokid, tmp_short):
    engine.publish()
    old = engine.pull(engine.image)
    decoy = engine.import_build(engine.ref(DECOY_REPOSITORY))
    lookalike = engine.import_build(engine.ref(LOOKALIKE_REPOSITORY))
    # An image of ours also tagged for another repository is that repository's too.
    shared = engine.import_build(engine.ref(tag="shared"))
    engine.client.api.tag(shared, engine.ref(DECOY_REPOSITORY), "shared")
    engine.publish()
    result = lokid.call("image.update")
    assert [r["id"] for r in result["removed"]] == [old]
    assert {decoy, lookalike, shared} <= engine.image_ids()


def test_prune_off_skips_the_pull(engine, tmp_short):
    engine.publish()
    old = engine.pull(engine.image)
    engine.publish()
    lokid = spawn(engine, tmp_short, LOKI_DOCKER_PRUNE="0")
    try:
        events = Events(lokid)
        result = start(lokid, project(tmp_short, "a"))
        assert result["image_id"] == old and not result["pulled"]
        # `pull: false` does the same per request.
        result = start(lokid, project(tmp_short, "b"), pull=False)
        assert result["image_id"] == old
        events.drain()
        assert not {"image.pull", "image.pruned"} & set(events.topics())
        engine.reset(containers_only=True)
        engine.client.api.remove_image(old, force=True)
        with pytest.raises(DaemonError) as err:
            start(lokid, project(tmp_short, "c"))
        assert err.value.code == "not_found" and "pulling is off" in err.value.message
    finally:
        lokid.kill()


def test_a_failed_pull_with_the_image_present_carries_on_with_a_warning(engine, tmp_short):
    engine.publish()
    engine.pull(engine.image)
    # Same image, reached through a registry address nobody listens on.
    dead = f"127.0.0.1:{_closed_port()}/asklokesh/loki-mode:latest"
    engine.client.api.tag(engine.image, dead.rsplit(":", 1)[0], "latest")
    lokid = spawn(engine, tmp_short, LOKI_DOCKER_IMAGE=dead)
    try:
        events = Events(lokid)
        result = start(lokid, project(tmp_short, "a"))
        assert not result["pulled"] and result["warnings"]
        assert "pull of" in events.wait("run.warning")["data"]["message"]
    finally:
        lokid.kill()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- dashboard port, logs, secrets ---------------------------------------------------------


def test_the_container_publishes_no_port_and_api_is_ignored_with_a_warning(
    engine, lokid, tmp_short
):
    """Loki Mode's plan (LOCK 3): the container's dashboard is off, with no published port,
    even for an old client's `api: true` or a LOKI_DASHBOARD in `env` (warned about)."""
    engine.publish()
    path = project(tmp_short, "a")
    events = Events(lokid)
    result = start(lokid, path, api=True, env={"LOKI_DASHBOARD": "true"})
    assert result["port"] is None
    assert [w.split(":")[0] for w in result["warnings"]] == [
        "api is deprecated and ignored",
        "LOKI_DASHBOARD in env is ignored",
    ]
    assert "no port is published" in events.wait("run.warning", path)["data"]["message"]
    attrs = inspect(engine, result["container"])
    env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
    assert env["LOKI_DASHBOARD"] == "false" and "LOKI_DASHBOARD_PORT" not in env
    assert not attrs["HostConfig"].get("PortBindings")
    assert not any((attrs["NetworkSettings"].get("Ports") or {}).values())
    assert lokid.call("run.status", {"project": path})["run"]["port"] is None
    assert "port" not in registry(lokid)[sha12(path)]
    plain = start(lokid, project(tmp_short, "b"), api=False)
    assert plain["warnings"] == [] and plain["port"] is None


# The keys and types of Loki Mode's dashboard's RegisteredProjectResponse: an entry without
# them makes its /api/registry/projects answer 500 for every project.
REGISTERED = {
    "id": str,
    "path": str,
    "name": str,
    "alias": (str, type(None)),
    "registered_at": str,
    "updated_at": str,
    "last_accessed": (str, type(None)),
    "has_loki_dir": bool,
    "status": str,
}


def session(path: str) -> dict[str, Any]:
    return json.loads((Path(path) / ".loki" / "session.json").read_text())


def test_session_json_says_running_while_the_container_runs(engine, lokid, tmp_short):
    """Loki Mode's host dashboard takes a registry entry without a pid as running when the
    folder's .loki/session.json says so: lokid keeps it in step with the container."""
    engine.publish()
    path = project(tmp_short, "app")
    result = start(lokid, path)
    assert session(path) == {
        "pid": None,
        "startedAt": result["started_at"],
        "invokedVia": "lokid",
        "status": "running",
        "updatedAt": session(path)["updatedAt"],
    }
    entry = registry(lokid)[sha12(path)]
    assert {k: isinstance(entry[k], t) for k, t in REGISTERED.items()} == dict.fromkeys(
        REGISTERED, True
    )
    assert (entry["status"], entry["pid"]) == ("running", None)
    lokid.call("run.stop", {"project": path})
    assert session(path)["status"] == "stopped" and session(path)["endedAt"]

    # A run that ends by itself (STOP) is marked stopped as well.
    start(lokid, path)
    assert session(path)["status"] == "running"
    stop_file(path)
    wait_until(lambda: session(path)["status"] == "stopped", 30, "session.json stopped")

    # Loki Mode's runner writes its own final status when it ends: that one stays.
    start(lokid, path)
    final = {**session(path), "status": "completed"}
    (Path(path) / ".loki" / "session.json").write_text(json.dumps(final))
    lokid.call("run.stop", {"project": path})
    assert session(path) == final


def test_session_json_stays_fresh_while_the_run_is_up(engine, tmp_short):
    """Loki Mode's dashboard takes a session without a pid as live for 5 minutes after its
    `updatedAt`: lokid refreshes it while the run is up (every 0.2 s here, 60 by default)."""
    daemon = spawn(engine, tmp_short, LOKID_SESSION_REFRESH="0.2")
    try:
        engine.publish()
        path = project(tmp_short, "app")
        start(daemon, path)
        first = session(path)["updatedAt"]
        wait_until(lambda: session(path)["updatedAt"] != first, 10, "a fresh updatedAt")
        assert session(path)["status"] == "running"
        daemon.call("run.stop", {"project": path})
        assert session(path)["status"] == "stopped"
    finally:
        daemon.kill()


def test_logs_follow_streams_to_the_requester_until_the_container_ends(engine, lokid, tmp_short):
    engine.publish()
    path = project(tmp_short, "app")
    name = start(lokid, path, args=["start", "--verbose"])["container"]
    with Client.connect(lokid.socket) as client:
        msgid = client.send("run.logs", {"project": path, "follow": True})
        first = client.next_event(timeout=20)
        assert first["topic"] == "run.log" and first["sub"] == 0
        assert first["data"] == {
            "id": msgid,
            "container": name,
            "line": "loki args: start --verbose",
        }
        stop_file(path)
        events = [first]
        while not events[-1]["data"].get("end"):
            events.append(client.next_event(timeout=20))
        result = client.result(msgid)
    lines = [e["data"]["line"] for e in events[:-1]]
    assert lines[-1] == "loki: STOP seen"
    assert events[-1]["data"] == {"id": msgid, "container": name, "end": True, "lines": len(lines)}
    assert result == {"container": name, "lines": [], "streamed": len(lines)}


def test_logs_follow_ends_on_cancel(engine, lokid, tmp_short):
    engine.publish()
    path = project(tmp_short, "app")
    start(lokid, path)

    def printed_build() -> bool:
        return any(
            x.startswith("build:") for x in lokid.call("run.logs", {"project": path})["lines"]
        )

    wait_until(printed_build, 10, "the container's second line")
    with Client.connect(lokid.socket) as client:
        msgid = client.send("run.logs", {"project": path, "follow": True, "tail": 1})
        assert client.next_event(timeout=20)["data"]["line"].startswith("build:")
        client.cancel(msgid)
        with pytest.raises(DaemonError) as err:
            client.result(msgid)
        assert err.value.code == "cancelled"
        assert client.call("run.status", {"project": path})["run"]["state"] == "running"
    with pytest.raises(DaemonError) as err:
        lokid.call("run.logs", {"project": str(tmp_short / "none")})
    assert err.value.code == "not_found"


def test_secrets_stay_out_of_events_labels_errors_and_the_log(engine, lokid, tmp_short):
    engine.publish()
    path = project(tmp_short, "app")
    events = Events(lokid)
    result = start(lokid, path, env={"GH_TOKEN": GH_SECRET})
    attrs = inspect(engine, result["container"])
    assert f"GH_TOKEN={GH_SECRET}" in attrs["Config"]["Env"]
    assert SECRET not in json.dumps(attrs["Config"]["Labels"])
    events.drain()
    lokid.call("run.stop", {"project": path})
    blob = json.dumps(events.seen) + lokid.log() + json.dumps(result)
    assert SECRET not in blob and GH_SECRET not in blob


def test_lokictl_run_commands(engine, lokid, tmp_short):
    engine.publish()
    engine.pull(engine.image)
    path = project(tmp_short, "app")
    Path(path, ".loki").mkdir()  # lokictl works inside a project only
    env = {**os.environ, "PWD": path, "LOKICTL_NO_SPAWN": "1"}
    cli = ["-m", "lokictl", "--socket", str(lokid.socket), "--json"]

    def lokictl(*args: str) -> Any:
        out = subprocess.run(
            [sys.executable, *cli, *args], env=env, cwd=path, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    started = lokictl("run", "start", "--no-pull", "--", "start", "--quick")
    assert started["container"] == f"loki-{sha12(path)}"
    assert lokictl("run", "status")["run"]["state"] == "running"
    assert [r["container"] for r in lokictl("run", "list")["runs"]] == [started["container"]]
    assert lokictl("run", "stop") == {"stopped": [started["container"]], "removed": []}
    assert lokictl("image", "update")["message"].startswith("nothing to reclaim")

    # The project is the logical $PWD, as Loki Mode's shell names it: a symlinked folder
    # is its own project.
    link = tmp_short / "link"
    link.symlink_to(path)
    env["PWD"] = str(link)
    started = lokictl("run", "start", "--no-pull")
    assert started["container"] == f"loki-{sha12(str(link))}"
    follow = subprocess.Popen(
        [sys.executable, "-m", "lokictl", "--socket", str(lokid.socket), "run", "logs", "-f"],
        env=env,
        cwd=link,
        stdout=subprocess.PIPE,
        text=True,
    )
    stop_file(path)
    out, _ = follow.communicate(timeout=30)
    assert follow.returncode == 0
    assert out.splitlines()[0] == "loki args: start" and "loki: STOP seen" in out
