"""Bad input through the other door: hostile bytes in every `.loki` file lokid watches.

Loki Mode's own tools (and users, and crashes) write these files; lokid reads them on every
change. Whatever is in them — random bytes, wrong JSON types, invalid UTF-8, a folder where
a file should be — lokid must stay up, never log an internal error, keep serving, and keep
its database: the acknowledged tasks stay.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reliability_support import Bystander

from lokictl import DaemonError
from support import Lokid, no_engine, short_tmpdir, wait_until

# Every file the watcher gives a meaning to (lokid/watch/meaning.py), relative to .loki/.
WATCHED = [
    "queue/pending.json",
    "queue/in-progress.json",
    "queue/completed.json",
    "queue/failed.json",
    "queue/dead-letter.json",
    "queue/cancelled.json",
    "loki.pid",
    "run.pid",
    "sessions/s1/loki.pid",
    "lokid/PAUSE",
    "PAUSE_AT_CHECKPOINT",
    "config/circuit-breakers.yaml",
    "docker/run.json",
    "events.jsonl",
    "dashboard-state.json",
    "state/prd-signature.json",
    "generated-prd.md",
    "signals/HUMAN_INPUT",
    "STOP",
    "PAUSE",
]

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
contents = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(json_values, max_size=5).map(
        lambda vs: b"\n".join(json.dumps(v).encode() for v in vs) + b"\n"
    ),
    st.sampled_from(
        [
            b"",
            b"\xff\xfe\x00garbage",
            b'[{"id": 1}]',
            b'[{"id": "x", "priority": 1e999}]',
            b'[{"id": "x", "dependencies": "x"}]',
            b'{"tasks": 5}',
            b"defaults: {failureThreshold: -1}",
            b"defaults: [1, 2]\noverrides: 7",
            b"{{{{",
            b'{"container": 5, "project_dir": ["x"]}',
        ]
    ),
)


@pytest.fixture(scope="module")
def daemon() -> Iterator[tuple[Lokid, Path]]:
    root = short_tmpdir("lkx-")
    project = root / "proj"
    (project / ".loki").mkdir(parents=True)
    lokid = Lokid(root, env={"LOKID_LOG_LEVEL": "info", **no_engine(root)}).start()
    try:
        yield lokid, project
    finally:
        lokid.kill()
        shutil.rmtree(root, ignore_errors=True)


def clear(path: Path) -> None:
    """Remove whatever is at `path`: a folder, a FIFO, a symlink (never followed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write(path: Path, data: bytes) -> None:
    """Replace whatever is at `path` (a folder, a FIFO, a symlink) with `data`."""
    clear(path)
    path.write_bytes(data)


def plant(path: Path, kind: int, data: bytes) -> None:
    """Sometimes what no file should be: a folder, a FIFO with no writer (opening it for
    reading blocks), a symlink loop, a symlink to /dev/zero (endless); else `data`."""
    clear(path)
    if kind == 0:
        path.mkdir()
    elif kind == 1:
        os.mkfifo(path)
    elif kind == 2:
        path.symlink_to(path.name)  # itself: ELOOP
    elif kind == 3:
        path.symlink_to("/dev/zero")
    else:
        path.write_bytes(data)


def test_hostile_bytes_in_every_watched_file(daemon):
    lokid, project = daemon
    p = {"project": str(project)}
    lokid.call("project.add", {"path": str(project)})
    acked = [
        lokid.call("queue.enqueue", p | {"task": {"id": f"keep{i}", "payload": {"i": i}}})["id"]
        for i in range(5)
    ]

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(name=st.sampled_from(WATCHED), data=contents, kind=st.integers(0, 19))
    def fuzz(name: str, data: bytes, kind: int) -> None:
        plant(project / ".loki" / name, kind, data)
        time.sleep(0.02)  # pacing, not a wait: the watcher's step is 5 ms, so most writes are seen
        assert lokid.proc.poll() is None, lokid.log()[-3000:]

    with Bystander(lokid.socket) as bystander:
        fuzz()
        # Let the watcher and the importer catch up with the last writes, then ask again.
        wait_until(lambda: lokid.call("queue.stats", p), 20, "queue.stats after the storm")
    assert lokid.proc.poll() is None, lokid.log()[-3000:]
    assert not bystander.failures, bystander.failures
    for task_id in acked:
        assert lokid.call("queue.get", p | {"id": task_id})["state"]
    errors = [line for line in lokid.log().splitlines() if " ERROR " in line]
    assert not errors, "\n".join(errors[:3])


@pytest.mark.parametrize("case", ["yaml not utf-8", "pending.json a folder"])
def test_bad_files_answer_clear_errors(tmp_short, case):
    """Bug 9 (fixed in 8f3c31a): both used to answer `internal`."""
    project = tmp_short / "proj"
    (project / ".loki" / "config").mkdir(parents=True)
    lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "info"}).start()
    p = {"project": str(project)}
    try:
        lokid.call("queue.enqueue", p | {"task": {"id": "a", "payload": {"a": 1}}})
        if case == "yaml not utf-8":
            write(project / ".loki" / "config" / "circuit-breakers.yaml", b"\xfc\xa6 defaults: {}")
            reply = lokid.call("breaker.reload", p)
            assert reply["reloaded"] is False and reply["error"], reply
        else:
            pending = project / ".loki" / "queue" / "pending.json"
            with contextlib.suppress(FileNotFoundError):
                pending.unlink()
            pending.mkdir(parents=True)
            try:
                lokid.call("queue.import", p)
            except DaemonError as err:
                assert err.code != "internal", err
        assert " ERROR " not in lokid.log(), lokid.log()[-3000:]
    finally:
        lokid.kill()
