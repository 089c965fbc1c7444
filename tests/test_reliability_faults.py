"""Faults from the world around lokid: the engine going away, a read-only `.loki`, a full disk.

Each must give the client a clear error (never `internal`), keep lokid up, and lose nothing
that was acknowledged. Mounts are real (tmpfs, read-only bind) and undone in `finally`.
Needs root for the mounts; skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dockerenv import spawn

from lokictl import DaemonError
from support import Lokid, wait_until

SECRET = "sk-ant-reliability-SECRET-9876543210"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")


def task(i: int, pad: int = 0) -> dict[str, Any]:
    return {"id": f"t{i}", "type": "eng", "payload": {"i": i, "pad": "y" * pad}}


def enqueue(lokid: Lokid, project: Path, i: int, pad: int = 0) -> str:
    return lokid.call("queue.enqueue", {"project": str(project), "task": task(i, pad)})["id"]


def code_of(call: Any) -> str:
    """The error code of a call that is expected to fail ('ok' when it did not)."""
    try:
        call()
    except DaemonError as err:
        return err.code
    return "ok"


@contextlib.contextmanager
def mounted(*args: str) -> Iterator[None]:
    """`mount args...` for the block; unmounted whatever happens (lazily if still busy)."""
    target = args[-1]
    subprocess.run(["mount", *args], check=True)
    try:
        yield
    finally:
        if subprocess.run(["umount", target], check=False).returncode != 0:
            subprocess.run(["umount", "-l", target], check=False)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make `folder` read-only even for root.

    Root ignores mode bits (chmod 0500 changes nothing for uid 0), and `chattr +i` on a
    folder only freezes its entries, not the files inside (lokid.db stays writable). A
    read-only bind mount of the folder onto itself gives EROFS for every write under it,
    which is what a read-only disk or a `ro` mount looks like to lokid.
    """
    with mounted("--bind", str(folder), str(folder)):
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        yield


@pytest.fixture
def lokid(tmp_short: Path) -> Iterator[Lokid]:
    daemon = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "info", "ANTHROPIC_API_KEY": SECRET})
    daemon.start()
    yield daemon
    daemon.kill()


# -- read-only .loki ------------------------------------------------------------------------


def read_only_codes(lokid: Lokid, project: Path, fresh: Path) -> dict[str, str]:
    """Error codes of writes while `.loki` is read-only: to a known project and a fresh one."""
    p = {"project": str(project)}
    return {
        "signal.pause": code_of(lambda: lokid.call("signal.pause", p)),
        "signal.stop": code_of(lambda: lokid.call("signal.stop", p)),
        "queue.enqueue (fresh project)": code_of(lambda: enqueue(lokid, fresh, 0)),
        "queue.enqueue": code_of(lambda: enqueue(lokid, project, 100)),
    }


@needs_root
def test_a_read_only_loki_keeps_lokid_up_and_loses_nothing(lokid, project, tmp_short):
    acked = [enqueue(lokid, project, i) for i in range(10)]
    fresh = tmp_short / "fresh"
    (fresh / ".loki").mkdir(parents=True)
    with read_only(project / ".loki"), read_only(fresh / ".loki"):
        read_only_codes(lokid, project, fresh)
        assert lokid.call("ping") and lokid.proc.poll() is None
        stats = lokid.call("queue.stats", {"project": str(project)})["states"]
        assert stats["pending"] >= 10
    # Writable again: everything acknowledged is there and writes work.
    assert enqueue(lokid, project, 200) == "t200"
    for task_id in acked:
        assert lokid.call("queue.get", {"project": str(project), "id": task_id})["state"]
    assert enqueue(lokid, fresh, 1) == "t1"


@needs_root
def test_a_read_only_loki_folder_is_a_clear_error(lokid, project, tmp_short):
    """Bug 5 (fixed in 25f66be): EROFS under .loki used to answer `internal`."""
    enqueue(lokid, project, 0)
    fresh = tmp_short / "fresh"
    (fresh / ".loki").mkdir(parents=True)
    with read_only(project / ".loki"), read_only(fresh / ".loki"):
        codes = read_only_codes(lokid, project, fresh)
    assert "internal" not in codes.values(), codes


# -- disk full --------------------------------------------------------------------------------


def fill(folder: Path) -> Path:
    """Write a file in `folder` until the filesystem says ENOSPC; return it (to free space)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: closing has nothing to flush
        try:
            while f.write(b"x" * 65536):
                pass
        except OSError:
            pass
    return filler


def full_disk_codes(lokid: Lokid, project: Path) -> tuple[list[str], dict[str, str]]:
    """Enqueue until writes fail on a full disk; (acknowledged ids, codes of the failures)."""
    acked, codes = [], {}
    for i in range(1000, 1300):
        try:
            acked.append(enqueue(lokid, project, i, pad=2000))
        except DaemonError as err:
            codes[f"queue.enqueue {i}"] = err.code
    claim = {"project": str(project), "agent": "a", "capabilities": ["eng"]}
    codes["queue.claim"] = code_of(lambda: lokid.call("queue.claim", claim))
    return acked, codes


@contextlib.contextmanager
def small_disk(project: Path) -> Iterator[None]:
    """The project on its own 2 MiB tmpfs: the state database shares its fate."""
    with mounted("-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(project)):
        (project / ".loki").mkdir()
        yield


@needs_root
def test_a_full_disk_keeps_lokid_up_and_loses_nothing(lokid, project):
    with small_disk(project):
        acked = [enqueue(lokid, project, i) for i in range(20)]
        filler = fill(project)
        more, codes = full_disk_codes(lokid, project)
        assert any(code != "ok" for code in codes.values()), "the disk never filled up"
        assert lokid.call("ping") and lokid.proc.poll() is None
        filler.unlink()
        assert enqueue(lokid, project, 5000) == "t5000", "writes work again once space is free"
        for task_id in acked + more:
            assert lokid.call("queue.get", {"project": str(project), "id": task_id})["state"]
        lokid.stop()  # close the database before the tmpfs goes away


@needs_root
def test_a_full_disk_is_a_clear_error(lokid, project):
    """Bug 6 (fixed in 25f66be): SQLITE_FULL used to answer `internal`."""
    with small_disk(project):
        enqueue(lokid, project, 0)
        fill(project)
        _, codes = full_disk_codes(lokid, project)
        lokid.stop()
    assert "internal" not in codes.values(), codes


# -- the Docker engine stopped and started during runs ----------------------------------------


class QueueTraffic:
    """Queue work in a thread while the engine goes down: it must not notice."""

    def __init__(self, lokid: Lokid, project: Path) -> None:
        self.lokid, self.project = lokid, project
        self.acked: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self.lokid.client() as c:
            i = 0
            while not self._stop.wait(0.01):
                i += 1
                try:
                    c.call("queue.enqueue", {"project": str(self.project), "task": task(i)})
                    self.acked.append(f"t{i}")
                except Exception as exc:
                    self.errors.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.docker
def test_engine_stopped_and_started_during_runs(engine, tmp_short):
    if not engine.own_engine:
        pytest.skip("stops the engine: only one these tests started")
    engine.publish()
    lokid = spawn(engine, tmp_short, LOKID_LOG_LEVEL="info", ANTHROPIC_API_KEY=SECRET)
    projects = [tmp_short / name for name in ("a", "b")]
    for path in projects:
        (path / ".loki").mkdir(parents=True)
        lokid.call("run.start", {"project": str(path)})
    traffic = QueueTraffic(lokid, projects[0])
    try:
        wait_until(lambda: len(traffic.acked) > 5, 30, "queue traffic")
        engine.stop_engine()
        try:
            for method in ("run.status", "run.start", "run.stop", "run.list"):
                params = {} if method == "run.list" else {"project": str(projects[1])}
                with pytest.raises(DaemonError) as err:
                    lokid.call(method, params)
                assert err.value.code == "unavailable", (method, err.value)
                assert engine.host in err.value.message, err.value.message
            before = len(traffic.acked)
            wait_until(lambda: len(traffic.acked) > before + 5, 30, "queue work, engine down")
        finally:
            engine.start_engine()
        # Back: lokid reconciles by itself and starts runs again.
        wait_until(lambda: run_state(lokid, projects[1]) == "exited", 60, "reconcile")
        assert lokid.call("run.start", {"project": str(projects[1])})["container"]
        lokid.call("run.stop", {"project": str(projects[1])})
    finally:
        traffic.stop()
        lokid.kill()
    assert not traffic.errors, traffic.errors[:3]
    assert "internal error" not in lokid.log()
    assert SECRET not in lokid.log()


def run_state(lokid: Lokid, project: Path) -> str | None:
    try:
        run = lokid.call("run.status", {"project": str(project)})["run"]
    except DaemonError:
        return None
    return run["state"] if run else "none"


# -- a Loki Mode tool holding the queue lock ------------------------------------------------


def test_import_while_another_process_holds_the_lock_is_a_clear_error(lokid, project):
    """A live process (this test) holds pending.json's mkdir lock past lokid's 5 s timeout.

    Bug 8 (fixed in 25f66be): the LockTimeout used to answer `internal`."""
    enqueue(lokid, project, 0)
    lockdir = project / ".loki" / "queue" / ".pending.lock.lockdir"
    lockdir.mkdir(parents=True, exist_ok=True)
    (lockdir / "owner.pid").write_text(f"{os.getpid()}\n")
    try:
        result = code_of(lambda: lokid.call("queue.import", {"project": str(project)}))
        assert lokid.call("ping") and lokid.proc.poll() is None
    finally:
        shutil.rmtree(lockdir, ignore_errors=True)
    assert result in ("unavailable", "conflict"), result
