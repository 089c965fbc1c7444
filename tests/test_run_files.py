"""The files around container runs: the engine endpoint the docker CLI would use, Loki Mode's
dashboard registry under concurrent writers, and run.json. Real files, real processes."""

import hashlib
import json
import multiprocessing
import threading
from pathlib import Path

from lokid.docker.endpoint import Endpoint, platform_default, resolve_endpoint
from lokid.domain.containers import project_id
from lokid.files import registry


def write_context(config: Path, name: str, host: str, current: bool = True) -> None:
    meta = config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps({"Name": name, "Endpoints": {"docker": {"Host": host}}})
    )
    if current:
        (config / "config.json").write_text(json.dumps({"currentContext": name}))


def test_endpoint_docker_host_then_context_then_default(tmp_path):
    home = tmp_path
    config = home / ".docker"
    colima = "unix:///Users/me/.colima/default/docker.sock"
    assert resolve_endpoint({"HOME": str(home)}) == Endpoint(platform_default(), "default")
    write_context(config, "colima", colima)
    assert resolve_endpoint({"HOME": str(home)}) == Endpoint(colima, "context colima")
    env = {"HOME": str(home), "DOCKER_HOST": "tcp://10.0.0.1:2375"}
    assert resolve_endpoint(env) == Endpoint("tcp://10.0.0.1:2375", "DOCKER_HOST")
    write_context(config, "orbstack", "unix:///orb.sock", current=False)
    env = {"HOME": str(home), "DOCKER_CONTEXT": "orbstack"}
    assert resolve_endpoint(env).host == "unix:///orb.sock"
    other = tmp_path / "elsewhere"
    write_context(other, "desktop", "unix:///desktop.sock")
    assert resolve_endpoint({"DOCKER_CONFIG": str(other)}).host == "unix:///desktop.sock"


def test_endpoint_unknown_or_default_context_falls_back(tmp_path):
    config = tmp_path / ".docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"currentContext": "gone"}))
    assert resolve_endpoint({"HOME": str(tmp_path)}).source == "default"
    (config / "config.json").write_text("{not json")
    assert resolve_endpoint({"HOME": str(tmp_path)}).source == "default"


def _register_many(home: str, prefix: str, count: int) -> None:
    for i in range(count):
        registry.register_running(f"/work/{prefix}{i}", Path(home))


def test_registry_concurrent_writers_lose_no_entry(tmp_path):
    folder = registry.registry_dir(tmp_path)
    folder.mkdir(parents=True)
    foreign = {"id": "feedfacecafe", "path": "/x", "status": "active", "extra": {"k": 1}}
    (folder / "projects.json").write_text(
        json.dumps({"version": "1.0", "projects": {"feedfacecafe": foreign}})
    )
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_register_many, args=(str(tmp_path), f"p{n}-", 15)) for n in "ab"]
    threads = [
        threading.Thread(target=_register_many, args=(str(tmp_path), f"t{n}-", 15)) for n in "ab"
    ]
    for worker in (*procs, *threads):
        worker.start()
    for worker in (*procs, *threads):
        worker.join(60)
    data = json.loads((folder / "projects.json").read_text())
    assert data["version"] == "1.0"
    assert data["projects"]["feedfacecafe"] == foreign
    assert len(data["projects"]) == 1 + 4 * 15
    entry = data["projects"][project_id("/work/pa-0")]
    assert (entry["status"], entry["pid"], entry["name"]) == ("running", None, "pa-0")
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_registry_mark_stopped_keeps_the_entry_and_a_local_runs_port(tmp_path):
    folder = registry.registry_dir(tmp_path)
    folder.mkdir(parents=True)
    local = {"id": project_id("/work/app"), "path": "/work/app", "pid": 1, "port": 57374}
    (folder / "projects.json").write_text(json.dumps({"projects": {local["id"]: local}}))
    registry.register_running("/work/app", tmp_path)  # a container run: no port of its own
    assert registry.mark_stopped("/work/app", tmp_path)
    entry = registry.registry_entries(tmp_path)[0]
    assert (entry["status"], entry["pid"], entry["port"]) == ("stopped", None, 57374)
    assert not registry.mark_stopped("/work/unknown", tmp_path)


def test_session_stop_leaves_others_sessions_and_gone_folders_alone(tmp_path):
    gone = tmp_path / "gone"
    assert not registry.mark_session_stopped(str(gone)) and not gone.exists()
    app = tmp_path / "app"
    app.mkdir()
    registry.write_session_running(str(app), "2026-11-21T05:00:00.000Z")
    skill = {"pid": None, "invokedVia": "skill", "status": "running"}
    (app / ".loki" / "session.json").write_text(json.dumps(skill))
    assert not registry.mark_session_stopped(str(app))
    assert json.loads((app / ".loki" / "session.json").read_text()) == skill


def test_run_file_is_loki_modes_four_keys_and_removal_checks_the_name(tmp_path):
    run = registry.RunFile("loki-abc", "img:latest", str(tmp_path), "2026-11-21T05:00:00.000Z")
    registry.write_run_file(str(tmp_path), run)
    path = tmp_path / ".loki" / "docker" / "run.json"
    assert set(json.loads(path.read_text())) == {"container", "image", "project_dir", "started_at"}
    assert registry.read_run_file(str(tmp_path)) == run
    assert not registry.remove_run_file(str(tmp_path), "loki-other")  # a newer run's file stays
    assert registry.remove_run_file(str(tmp_path), "loki-abc")
    assert not path.exists() and registry.read_run_file(str(tmp_path)) is None
