import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerenv import DockerEnv, engine_answers
from pgenv import PgCluster, available, start_cluster

from support import STARTED, Lokid, short_tmpdir


@pytest.fixture
def tmp_short() -> Iterator:
    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """One private PostgreSQL cluster for the whole session (tests/pgenv.py)."""
    why = available()
    if why is not None:
        pytest.skip(why)
    cluster = start_cluster()
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def pg_url(pg: PgCluster) -> str:
    """The session's database: every test's projects have names of their own in it."""
    return pg.create_db("lokid_tests")


@pytest.fixture
def store_env(request) -> dict[str, str]:
    """lokid's environment for a queue store: SQLite unless a test is parametrised with
    `pgenv.both_stores` (then once more with its queues in PostgreSQL)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return {}
    return {"LOKID_STORE": request.getfixturevalue("pg_url")}


@pytest.fixture
def lokid(tmp_short, store_env) -> Iterator[Lokid]:
    """A running daemon; its log is printed when the test fails."""
    daemon = Lokid(tmp_short, env=store_env).start()
    yield daemon
    daemon.kill()


@pytest.fixture
def project(tmp_short) -> Path:
    """A project folder with its `.loki/` (as Loki Mode or `lokictl init` leaves it)."""
    path = tmp_short / "proj"
    (path / ".loki").mkdir(parents=True)
    return path


@pytest.fixture(scope="session")
def docker_env() -> Iterator[DockerEnv]:
    """One engine and registry for the whole session, torn down at its end."""
    if os.geteuid() != 0 and not engine_answers(
        os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    ):
        pytest.skip("no Docker engine answers, and starting one needs root")
    env = DockerEnv()
    try:
        env.start()
    except BaseException:
        env.close()
        raise
    yield env
    env.close()


@pytest.fixture
def engine(docker_env: DockerEnv) -> Iterator[DockerEnv]:
    """The session's engine, emptied of test containers and images before each test."""
    if docker_env.own_engine and (
        docker_env.dockerd is None or docker_env.dockerd.poll() is not None
    ):
        docker_env.start_engine()
    docker_env.reset()
    yield docker_env


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    daemon = item.funcargs.get("lokid") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(daemon, Lokid):
        report.sections.append(("lokid log", daemon.log()[-20000:]))
    return report


@pytest.fixture
def home(tmp_short: Path) -> Path:
    """An empty folder to be a user's $HOME (lokictl's discovery never counts it)."""
    path = tmp_short / "home"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _no_lokid_left_behind() -> Iterator[None]:
    """A lokid a test started (itself or through a function-scoped fixture) does not
    outlive it, even when the test failed before stopping it. (Wider fixtures start
    theirs before this mark and stop them themselves.)"""
    mark = len(STARTED)
    yield
    for lokid in STARTED[mark:]:
        lokid.kill()
    del STARTED[mark:]
