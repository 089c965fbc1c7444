"""Where a project's queue lives, and what a client hears when PostgreSQL cannot be used:
the server named, its password never (in replies and in lokid's log)."""

import subprocess
import sys

import pytest
from pgenv import PASSWORD, PASSWORD_ROLE

from lokictl import DaemonError
from support import Lokid, call

TASK = {"type": "eng", "payload": {"n": 1}}


def unavailable(lokid: Lokid, project) -> DaemonError:
    with pytest.raises(DaemonError) as caught:
        call(lokid, "queue.enqueue", project, task=TASK)
    return caught.value


def test_an_unreachable_server_is_named_without_its_password(tmp_short, project, pg):
    url = pg.tcp_url("lokid_tests", PASSWORD_ROLE, PASSWORD).replace(str(pg.port), "1")
    lokid = Lokid(tmp_short, env={"LOKID_STORE": url}).start()
    try:
        error = unavailable(lokid, project)
        assert error.code == "unavailable"
        assert f"postgresql://{PASSWORD_ROLE}@127.0.0.1:1/lokid_tests" in error.message
        assert PASSWORD not in error.message and PASSWORD not in str(error.data)
        assert lokid.call("ping")  # lokid stays up
        assert unavailable(lokid, project).code == "unavailable"  # and tries again
    finally:
        lokid.kill()
    assert PASSWORD not in lokid.log()


def test_a_wrong_password_is_a_clear_unavailable(tmp_short, project, pg):
    pg.create_password_role("lokid_tests")
    url = pg.tcp_url("lokid_tests", PASSWORD_ROLE, PASSWORD + "x")
    lokid = Lokid(tmp_short, env={"LOKID_STORE": url}).start()
    try:
        error = unavailable(lokid, project)
        assert "password authentication failed" in error.message
        assert PASSWORD not in error.message
        good = pg.tcp_url("lokid_tests", PASSWORD_ROLE, PASSWORD)
        (project / ".loki" / "config").mkdir()
        (project / ".loki" / "config" / "queue-store.yaml").write_text(f"url: {good}\n")
        error = unavailable(lokid, project)
        assert error.code == "invalid_params" and "holds a password" in error.message
        assert PASSWORD not in error.message
    finally:
        lokid.kill()
    assert PASSWORD not in lokid.log()


def test_the_project_file_chooses_the_store_and_the_name(lokid, project, pg_url):
    """SQLite by default; the file moves this project's queue into PostgreSQL under a name
    of its own, which a second folder naming the same queue sees."""
    call(lokid, "queue.enqueue", project, task=TASK)
    assert (project / ".loki" / "lokid" / "lokid.db").exists()
    other = project.parent / "other"
    (other / ".loki" / "config").mkdir(parents=True)
    (other / ".loki" / "config" / "queue-store.yaml").write_text(
        f"url: '{pg_url}'\nname: choice-test\n"
    )
    task_id = call(lokid, "queue.enqueue", other, task=TASK)["id"]
    assert not (other / ".loki" / "lokid" / "lokid.db").exists()
    assert call(lokid, "queue.get", other, id=task_id)["state"] == "pending"
    third = project.parent / "third"
    (third / ".loki" / "config").mkdir(parents=True)
    (third / ".loki" / "config" / "queue-store.yaml").write_text("url: mysql://db/x\n")
    with pytest.raises(DaemonError) as caught:
        call(lokid, "queue.stats", third)
    assert caught.value.code == "invalid_params"
    assert "queue-store.yaml: `url` must be `sqlite` or a postgresql:// URL" in caught.value.message


def test_a_bad_lokid_store_stops_lokid_without_repeating_it(tmp_short):
    secret = "mysql://root:hunter2@db/x"
    done = subprocess.run(
        [sys.executable, "-m", "lokid", "serve", "--socket", str(tmp_short / "s.sock")],
        env={**Lokid(tmp_short).env, "LOKID_STORE": secret},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "LOKID_STORE" in done.stderr and "postgresql://" in done.stderr
    assert "hunter2" not in done.stderr


def test_the_schema_is_versioned_and_a_newer_one_refused(pg):
    """lokid creates its schema in an empty database, and refuses one a newer lokid wrote
    instead of writing rows in a shape it does not know."""
    from lokid.errors import StoreUnavailable
    from lokid.store.pg_database import open_database
    from lokid.store.pg_schema import SCHEMA_VERSION

    url = pg.create_db("schema_test")
    open_database(url).close()
    assert pg.sql("SELECT version FROM lokid.meta", "schema_test") == [(SCHEMA_VERSION,)]
    open_database(url).close()  # a second open migrates nothing
    pg.sql("UPDATE lokid.meta SET version = 99", "schema_test")
    with pytest.raises(StoreUnavailable, match="schema version 99; this lokid knows"):
        open_database(url)


def test_the_keda_query_counts_what_workers_could_claim(lokid, project, pg, pg_url):
    """README's KEDA trigger: `lokid.ready` is the queue's depth, per project and type."""
    config = project / ".loki" / "config"
    config.mkdir()
    (config / "queue-store.yaml").write_text(f"url: '{pg_url}'\nname: keda-depth\n")
    parent = call(lokid, "queue.enqueue", project, task={"type": "build", "payload": {"a": 1}})
    for n in range(3):
        task = {"type": "build", "payload": {"n": n}}
        call(lokid, "queue.enqueue", project, task=task)
    waiting = {"type": "build", "payload": {"w": 1}, "dependencies": [parent["id"]]}
    call(lokid, "queue.enqueue", project, task=waiting)
    call(lokid, "queue.claim", project, agent="w", capabilities=["build"])
    query = "SELECT coalesce(sum(tasks), 0) FROM lokid.ready WHERE project = 'keda-depth'"
    assert pg.sql(query, pg_url.rsplit("/", 1)[1].split("?")[0]) == [(3,)]
