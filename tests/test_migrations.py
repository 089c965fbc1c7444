"""The migrations area under trio, on real folders, a real git repository and real
processes taking Loki Mode's manifest lock (the daemon wiring is tested elsewhere)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import msgspec
import pytest
import trio
from migration_support import (
    MID,
    git,
    git_repo,
    make_migration,
    manifest,
    pass_understand_gate,
    read_manifest,
    run_writer,
    sessions,
    set_phases,
    tags,
    wait_locked,
    writer,
)

from lokid.domain.migration import Details
from lokid.errors import Conflict, InvalidParams, NotFound, Unavailable
from lokid.migrations import MigrationArea, default_root, lock


@pytest.fixture
def codebase(tmp_path) -> Path:
    return git_repo(tmp_path / "app")


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "home" / ".loki" / "migrations"


@pytest.fixture
def folder(root, codebase) -> Path:
    return make_migration(root, codebase)


@pytest.fixture
def area(root) -> MigrationArea:
    return MigrationArea(root)


def run(area: MigrationArea, method: str, *args):
    """One area method in its own trio run, as a handler would await it."""
    return trio.run(getattr(area, method), *args)


def to_builtins(value):
    return msgspec.to_builtins(value)


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../../etc", "mig_1_2_x", "", "mig_20260223_143052_a/b"])
def test_a_malformed_id_is_invalid_params_before_any_file_is_touched(area, root, bad):
    for method, args in [
        ("get", ()),
        ("start_phase", ("understand",)),
        ("advance", ("understand",)),
        ("checkpoint", ("s1",)),
    ]:
        with pytest.raises(InvalidParams, match="must match"):
            run(area, method, bad, *args)
    assert not root.exists()


def test_an_unknown_phase_is_invalid_params(area, folder):
    for method in ("start_phase", "advance"):
        with pytest.raises(InvalidParams, match="unknown phase 'deploy'"):
            run(area, method, MID, "deploy")


def test_a_missing_migration_is_not_found_and_no_lock_file_appears(area, root, folder):
    other = "mig_20260101_000000_other-ffffff"
    for method, args in [
        ("get", ()),
        ("start_phase", ("understand",)),
        ("advance", ("understand",)),
        ("checkpoint", ("s1",)),
        ("progress", ("agent", "text")),
    ]:
        with pytest.raises(NotFound, match=f"migration {other} not found"):
            run(area, method, other, *args)
    assert not (root / other).exists()


def test_a_folder_without_a_manifest_is_not_found(area, root):
    (root / MID).mkdir(parents=True)
    with pytest.raises(NotFound):
        run(area, "get", MID)


def test_a_corrupt_manifest_is_unavailable_and_left_as_it_is(area, folder):
    (folder / "manifest.json").write_text("{half a manifest")
    for method, args in [("get", ()), ("start_phase", ("guardrail",))]:
        with pytest.raises(Unavailable, match="is not valid JSON"):
            run(area, method, MID, *args)
    assert (folder / "manifest.json").read_text() == "{half a manifest"
    (folder / "manifest.json").write_text('{"phases": []}')
    with pytest.raises(Unavailable, match="phases is not an object"):
        run(area, "get", MID)


# -- list and get --------------------------------------------------------------------------


def test_list_shows_each_migration_and_skips_unreadable_ones(area, root, codebase, folder):
    second = make_migration(root, codebase, "mig_20260224_000000_app-bbbbbb")
    set_phases(second, understand="completed", guardrail="completed", migrate="in_progress")
    make_migration(root, codebase, "mig_20260225_000000_app-cccccc")
    (root / "mig_20260225_000000_app-cccccc" / "manifest.json").write_text("junk")
    (root / "not-a-migration").mkdir()
    result = to_builtins(run(area, "list"))
    assert result == {
        "migrations": [
            {
                "id": MID,
                "created_at": "2026-02-23T14:30:52.000001+00:00",
                "source": str(codebase),
                "target": "typescript",
                "status": "in_progress",
                "current_phase": "understand",
            },
            {
                "id": "mig_20260224_000000_app-bbbbbb",
                "created_at": "2026-02-23T14:30:52.000001+00:00",
                "source": str(codebase),
                "target": "typescript",
                "status": "in_progress",
                "current_phase": "migrate",
            },
        ]
    }


def test_list_without_a_migrations_folder_is_empty(area, root):
    assert to_builtins(run(area, "list")) == {"migrations": []}


def test_get_returns_manifest_phases_and_progress(area, folder, codebase):
    (folder / "features.json").write_text(
        json.dumps({"features": [{"id": "f1", "passes": True}, {"id": "f2", "passes": False}]})
    )
    steps = [{"id": "s1", "status": "completed"}, {"id": "s2", "status": "in_progress"}]
    (folder / "migration-plan.json").write_text(json.dumps({"steps": steps}))
    data = read_manifest(folder)
    data["checkpoints"] = ["loki-migrate/s1/pre"]
    data["custom_key"] = {"kept": True}
    (folder / "manifest.json").write_text(json.dumps(data))
    (folder / "checkpoints" / "s1.json").write_text(
        json.dumps({"step_id": "s1", "tag": "loki-migrate/s1/pre", "created_at": "T"})
    )
    result = to_builtins(run(area, "get", MID))
    assert result["manifest"] == data
    assert (result["id"], result["path"], result["source"]) == (MID, str(folder), str(codebase))
    assert result["phases"][0] == {
        "phase": "understand",
        "status": "in_progress",
        "started_at": "2026-02-23T14:30:52.000002+00:00",
        "completed_at": None,
    }
    assert [p["status"] for p in result["phases"][1:]] == ["pending"] * 3
    assert result["progress"] == {
        "status": "in_progress",
        "current_phase": "understand",
        "completed_phases": [],
        "features": {"passing": 1, "total": 2},
        "steps": {"current": 2, "completed": 1, "total": 2},
        "current_step": "s2",
        "last_checkpoint": {"tag": "loki-migrate/s1/pre", "step_id": "s1", "timestamp": "T"},
        "checkpoints_count": 1,
    }


# -- phases and gates ----------------------------------------------------------------------


def test_start_phase_is_idempotent_and_writes_nothing_when_in_progress(area, folder):
    before = (folder / "manifest.json").stat()
    result = run(area, "start_phase", MID, "understand")
    assert (result.started, result.phase) == (False, "understand")
    after = (folder / "manifest.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_start_phase_starts_a_pending_phase_in_loki_modes_format(folder):
    area = MigrationArea(folder.parent, clock=lambda: "2026-03-01T00:00:00.000001+00:00")
    result = run(area, "start_phase", MID, "verify")
    assert result.started is True
    verify = read_manifest(folder)["phases"]["verify"]
    assert verify == {
        "status": "in_progress",
        "started_at": "2026-03-01T00:00:00.000001+00:00",
        "completed_at": "",
    }
    text = (folder / "manifest.json").read_text()
    assert text == json.dumps(read_manifest(folder), indent=2, ensure_ascii=False)
    assert (folder / "manifest.json").stat().st_mode & 0o777 == 0o600


def test_understand_gate_fails_then_passes(area, folder):
    with pytest.raises(Conflict, match=r"^Phase gate failed: no documentation generated in docs/$"):
        run(area, "advance", MID, "understand")
    (folder / "docs" / "overview.md").write_text("x")
    with pytest.raises(Conflict, match=r"^Phase gate failed: seams.json does not exist$"):
        run(area, "advance", MID, "understand")
    (folder / "seams.json").write_text("[]")
    result = run(area, "advance", MID, "understand")
    assert (result.phase, result.next) == ("understand", "guardrail")
    phases = read_manifest(folder)["phases"]
    assert phases["understand"]["status"] == "completed"
    assert phases["understand"]["completed_at"] == result.completed_at
    assert phases["guardrail"] == {
        "status": "in_progress",
        "started_at": result.completed_at,
        "completed_at": "",
    }


def test_a_failing_gate_changes_nothing(area, folder):
    before = (folder / "manifest.json").read_bytes()
    with pytest.raises(Conflict):
        run(area, "advance", MID, "understand")
    assert (folder / "manifest.json").read_bytes() == before


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "Phase gate failed: features.json not found"),
        ("{broken", "Phase gate failed: features.json is invalid: "),
        ("[]", "No features defined"),
        (
            json.dumps([{"id": "login", "passes": True}, {"id": "export", "passes": False}]),
            "Phase gate failed: 1 characterization tests not passing (export)",
        ),
    ],
)
def test_guardrail_gate_failures(area, folder, content, reason):
    set_phases(folder, understand="completed", guardrail="in_progress")
    if content is not None:
        (folder / "features.json").write_text(content)
    with pytest.raises(Conflict) as info:
        run(area, "advance", MID, "guardrail")
    assert info.value.message.startswith(reason)
    assert read_manifest(folder)["phases"]["guardrail"]["status"] == "in_progress"


def test_guardrail_gate_passes_with_every_feature_passing(area, folder):
    set_phases(folder, understand="completed", guardrail="in_progress")
    features = [{"id": "login", "passes": True, "notes": "x"}, {"id": "export", "passes": True}]
    (folder / "features.json").write_text(json.dumps({"features": features}))
    assert run(area, "advance", MID, "guardrail").next == "migrate"


def test_migrate_gate_needs_every_step_completed(area, folder):
    set_phases(folder, understand="completed", guardrail="completed", migrate="in_progress")
    with pytest.raises(Conflict, match=r"migration-plan\.json not found"):
        run(area, "advance", MID, "migrate")
    steps = [{"id": "s1", "status": "completed"}, {"id": "s2", "status": "in_progress"}]
    (folder / "migration-plan.json").write_text(json.dumps({"steps": steps}))
    with pytest.raises(Conflict, match=r"1 steps not completed \(s2\)"):
        run(area, "advance", MID, "migrate")
    steps[1]["status"] = "completed"
    (folder / "migration-plan.json").write_text(json.dumps({"steps": steps}))
    assert run(area, "advance", MID, "migrate").next == "verify"


def test_verify_has_no_gate_and_a_completed_phase_cannot_advance_again(area, folder):
    done = dict.fromkeys(("understand", "guardrail", "migrate"), "completed")
    set_phases(folder, **done, verify="in_progress")
    result = run(area, "advance", MID, "verify")
    assert result.next is None
    assert [p.status for p in result.phases] == ["completed"] * 4
    assert to_builtins(run(area, "list"))["migrations"][0]["status"] == "completed"
    with pytest.raises(Conflict) as info:
        run(area, "advance", MID, "verify")
    assert info.value.message == (
        "Cannot advance phase 'verify': status is 'completed', expected 'in_progress'"
    )
    assert info.value.data == {"phase": "verify", "status": "completed"}


def test_a_phase_not_in_progress_is_conflict(area, folder):
    pass_understand_gate(folder)
    set_phases(folder, understand="pending")
    with pytest.raises(Conflict, match="status is 'pending', expected 'in_progress'"):
        run(area, "advance", MID, "understand")


# -- progress.md ---------------------------------------------------------------------------


def test_progress_appends_sessions_in_loki_modes_format(area, folder):
    result = run(area, "progress", MID, "agent-7", "mapped the modules")
    details = Details(steps_completed="s1", tests_passing="12/12", notes="ok")
    run(area, "progress", MID, "agent-8", "two\nlines", details)
    text = (folder / "progress.md").read_text()
    assert text == (
        "# Migration Progress\n# Auto-updated after every agent session\n"
        f"\n## Session: {result.at}\nAgent: agent-7\nPhase: understand\n"
        "Summary: mapped the modules\n"
        f"\n## Session: {sessions(folder)[1]['at']}\nAgent: agent-8\nPhase: understand\n"
        "Summary: two\nlines\nSteps completed: s1\nTests: 12/12\nNotes: ok\n"
    )
    assert (result.phase, result.sessions) == ("understand", 1)


def test_progress_keeps_the_last_50_sessions_as_loki_mode_does(area, folder):
    for i in range(60):
        result = run(area, "progress", MID, "agent", f"entry {i}")
    assert result.sessions == 51
    assert [s["Summary"] for s in sessions(folder)] == [f"entry {i}" for i in range(9, 60)]
    assert (folder / "progress.md").read_text().startswith("# Migration Progress\n")


def test_progress_that_would_forge_a_session_is_refused(area, folder):
    with pytest.raises(InvalidParams, match="must not contain a line starting with"):
        run(area, "progress", MID, "a", "x\n## Session: 2026 fake")
    with pytest.raises(InvalidParams, match="agent must be one non-empty line"):
        run(area, "progress", MID, "", "x")
    assert not (folder / "progress.md").exists()


# -- checkpoints and rollback --------------------------------------------------------------


def test_checkpoint_tags_the_codebase_and_records_it(area, folder, codebase):
    head = git(codebase, "rev-parse", "HEAD")
    result = run(area, "checkpoint", MID, "step-1")
    assert (result.tag, result.commit, result.step) == ("loki-migrate/step-1/pre", head, "step-1")
    assert tags(codebase) == ["loki-migrate/step-1/pre"]
    assert read_manifest(folder)["checkpoints"] == ["loki-migrate/step-1/pre"]
    meta = json.loads((folder / "checkpoints" / "step-1.json").read_text())
    assert meta == {
        "step_id": "step-1",
        "tag": "loki-migrate/step-1/pre",
        "created_at": result.created_at,
    }
    progress = to_builtins(run(area, "get", MID))["progress"]
    assert progress["last_checkpoint"] == {
        "tag": "loki-migrate/step-1/pre",
        "step_id": "step-1",
        "timestamp": result.created_at,
    }


def test_a_second_checkpoint_of_a_step_is_conflict_and_changes_nothing(area, folder, codebase):
    run(area, "checkpoint", MID, "s1")
    with pytest.raises(Conflict, match="already exists"):
        run(area, "checkpoint", MID, "s1")
    assert read_manifest(folder)["checkpoints"] == ["loki-migrate/s1/pre"]


def test_a_bad_step_is_invalid_params(area, folder, codebase):
    with pytest.raises(InvalidParams, match="invalid step id"):
        run(area, "checkpoint", MID, "a/b")
    assert tags(codebase) == []


def test_a_codebase_that_is_not_a_repository_is_conflict(area, root, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    make_migration(root, plain, MID)
    with pytest.raises(Conflict, match="cannot tag loki-migrate/s1/pre in"):
        run(area, "checkpoint", MID, "s1")
    assert read_manifest(root / MID)["checkpoints"] == []


def test_the_tag_is_deleted_when_the_lock_stays_held(root, folder, codebase):
    area = MigrationArea(root, lock_timeout=0.3)
    holder = writer("hold", str(folder), "30")
    try:
        wait_locked(holder)
        with pytest.raises(Unavailable) as info:
            run(area, "checkpoint", MID, "s1")
    finally:
        holder.kill()
        holder.wait()
    assert info.value.message.startswith(f"{folder}/manifest.json.lock is held by another")
    assert info.value.data == {"lock": f"{folder}/manifest.json.lock"}
    assert tags(codebase) == []
    assert not (folder / "checkpoints" / "s1.json").exists()
    assert read_manifest(folder)["checkpoints"] == []


def test_the_tag_is_deleted_when_the_manifest_cannot_be_saved(root, folder, codebase):
    """The manifest turns to junk while lokid waits for the lock, after it tagged."""
    area = MigrationArea(root, lock_timeout=30)
    holder = writer("hold-then-corrupt", str(folder), stdin=subprocess.PIPE)
    outcome: list[BaseException] = []

    async def main() -> None:
        async def checkpoint() -> None:
            try:
                await area.checkpoint(MID, "s1")
            except Unavailable as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(checkpoint)
            with trio.fail_after(20):
                while "loki-migrate/s1/pre" not in await trio.to_thread.run_sync(tags, codebase):
                    await trio.sleep(0.01)
            holder.stdin.write("go\n")
            holder.stdin.flush()

    try:
        wait_locked(holder)
        trio.run(main)
    finally:
        holder.kill()
        holder.wait()
    assert "is not valid JSON" in outcome[0].message
    assert tags(codebase) == []
    assert not (folder / "checkpoints" / "s1.json").exists()


def test_rollback_needs_confirm_and_then_resets_hard(root, folder, codebase):
    events: list = []
    area = MigrationArea(root, lambda *e: events.append(e))
    first = git(codebase, "rev-parse", "HEAD")
    run(area, "checkpoint", MID, "s1")
    (codebase / "app.py").write_text("print('v2')\n")
    git(codebase, "commit", "-q", "-am", "v2")
    second = git(codebase, "rev-parse", "HEAD")
    (codebase / "app.py").write_text("print('uncommitted')\n")
    (codebase / "notes.txt").write_text("untracked")

    with pytest.raises(InvalidParams, match="destroys uncommitted work: send confirm: true"):
        run(area, "rollback", MID, "s1", False)
    assert git(codebase, "rev-parse", "HEAD") == second
    assert (codebase / "app.py").read_text() == "print('uncommitted')\n"

    result = run(area, "rollback", MID, "s1", True)
    assert (result.head, result.previous_head, result.tag) == (first, second, "loki-migrate/s1/pre")
    assert git(codebase, "rev-parse", "HEAD") == first
    assert (codebase / "app.py").read_text() == "print('v1')\n"
    assert (codebase / "notes.txt").read_text() == "untracked"  # untracked files stay
    [(topic, project, data)] = events
    assert (topic, project, to_builtins(data)) == (
        "migration.rolled-back",
        str(codebase),
        to_builtins(result),
    )


def test_rollback_to_a_checkpoint_that_does_not_exist_is_not_found(area, folder, codebase):
    with pytest.raises(NotFound, match="no checkpoint loki-migrate/s9/pre in"):
        run(area, "rollback", MID, "s9", True)


# -- the lock ------------------------------------------------------------------------------


def test_a_lock_held_too_long_is_unavailable_and_the_loop_keeps_running(root, folder):
    pass_understand_gate(folder)
    area = MigrationArea(root, lock_timeout=0.5)
    holder = writer("hold", str(folder), "30")
    ticks: list[float] = []
    result: list[BaseException] = []

    async def main() -> None:
        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            start = time.monotonic()
            for method, args in [("advance", ("understand",)), ("progress", ("a", "s"))]:
                try:
                    await getattr(area, method)(MID, *args)
                except Unavailable as exc:
                    result.append(exc)
            waited = time.monotonic() - start
            nursery.cancel_scope.cancel()
        during = [t for t in ticks if start <= t <= start + waited]
        # Two waits of 0.5 s at 10 ms a tick: about 100 ticks; a blocked loop gives ~0.
        assert len(during) >= 40, (len(during), waited)
        assert 0.9 <= waited < 5

    try:
        wait_locked(holder)
        trio.run(main)
    finally:
        holder.kill()
        holder.wait()
    assert [str(e) for e in result] == [
        f"{folder}/manifest.json.lock is held by another process (waited 0.5 s)"
    ] * 2
    assert read_manifest(folder)["phases"]["understand"]["status"] == "in_progress"
    assert not (folder / "progress.md").exists()


def test_the_lock_is_taken_once_per_operation_and_released(area, folder):
    """A second acquisition in the same thread would wait for itself: each operation
    takes the lock once, and a writer in another process gets it right after."""
    pass_understand_gate(folder)
    run(area, "advance", MID, "understand")
    run(area, "progress", MID, "a", "s")
    run(area, "start_phase", MID, "understand")
    run_writer("checkpoints", str(folder), "ext", "1")
    assert read_manifest(folder)["checkpoints"] == ["loki-migrate/ext_0/pre"]


def test_waiters_left_behind_by_timeouts_are_bounded_and_let_go(folder):
    holder = writer("hold", str(folder), "30")
    try:
        wait_locked(holder)
        for _ in range(lock.MAX_STRANDED + 3):
            with pytest.raises(lock.LockTimeout), lock.manifest_lock(folder, 0.05):
                pass
        assert lock._stranded == lock.MAX_STRANDED  # the last three polled instead
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while lock._stranded and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lock._stranded == 0
    with lock.manifest_lock(folder, 0.05):
        pass
    run_writer("checkpoints", str(folder), "ext", "1")
    assert read_manifest(folder)["checkpoints"] == ["loki-migrate/ext_0/pre"]


# -- the watcher ---------------------------------------------------------------------------


async def until(predicate, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


class Events:
    """What the area publishes, received in order."""

    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel(math.inf)

    def publish(self, topic: str, project: str | None, data) -> None:
        self.send.send_nowait((topic, project, msgspec.to_builtins(data)))

    async def next(self, timeout: float = 10) -> tuple:
        with trio.fail_after(timeout):
            return await self.recv.receive()

    def pending(self) -> list:
        out = []
        while True:
            try:
                out.append(self.recv.receive_nowait())
            except trio.WouldBlock:
                return out


def test_the_watcher_reports_outside_changes_from_before_the_folder_exists(tmp_path, codebase):
    home = tmp_path / "home"
    home.mkdir()
    root = home / ".loki" / "migrations"
    folder = root / MID
    got = Events()
    area = MigrationArea(root, got.publish)
    project = str(codebase)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(area.run)
            await until(lambda: area.watching == home)
            await trio.to_thread.run_sync(lambda: make_migration(root, codebase))
            assert await got.next() == (
                "migration.created",
                project,
                {
                    "id": MID,
                    "source": project,
                    "target": "typescript",
                    "created_at": "2026-02-23T14:30:52.000001+00:00",
                },
            )
            await until(lambda: area.watching == root)
            await trio.to_thread.run_sync(run_writer, "advance", str(folder), "understand")
            topic, where, data = await got.next()
            assert (topic, where, data["phase"], data["next"]) == (
                "migration.advanced",
                project,
                "understand",
                "guardrail",
            )
            await trio.to_thread.run_sync(run_writer, "checkpoints", str(folder), "ext", "1")
            assert await got.next() == (
                "migration.checkpoint",
                project,
                {"id": MID, "step": "ext_0", "tag": "loki-migrate/ext_0/pre"},
            )
            await trio.to_thread.run_sync(run_writer, "progress", str(folder), "cli", "1")
            topic, _, data = await got.next()
            assert (topic, data["agent"], data["phase"], data["summary"]) == (
                "migration.progress",
                "cli",
                "guardrail",
                "cli-0",
            )
            await trio.to_thread.run_sync(run_writer, "start", str(folder), "understand")
            topic, _, data = await got.next()
            assert (topic, data["phase"]) == ("migration.phase-started", "understand")
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_bad_files_and_a_removed_folder_do_not_stop_the_watcher(root, codebase):
    root.mkdir(parents=True)
    got = Events()
    area = MigrationArea(root, got.publish)
    folder = root / MID

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(area.run)
            await until(lambda: area.watching == root)
            folder.mkdir()
            (folder / "manifest.json").write_text("{ junk")
            (folder / "progress.md").write_bytes(b"\xff\xfe not utf-8")
            other = root / "mig_20260101_000000_x-000000"
            other.mkdir()
            (other / "manifest.json").write_text("[1, 2]")
            (folder / "manifest.json").write_text(json.dumps(manifest(MID, codebase)))
            topic, _, data = await got.next()
            assert (topic, data["id"]) == ("migration.created", MID)
            await trio.to_thread.run_sync(shutil.rmtree, root)
            assert await got.next() == ("migration.removed", str(codebase), {"id": MID})
            await until(lambda: area.watching == root.parent)
            await trio.to_thread.run_sync(lambda: make_migration(root, codebase))
            topic, _, data = await got.next()
            assert (topic, data["id"]) == ("migration.created", MID)
            nursery.cancel_scope.cancel()
        assert got.pending() == []

    trio.run(main)


def test_lokids_own_changes_are_reported_once_by_the_watcher(root, folder, codebase):
    pass_understand_gate(folder)
    got = Events()
    area = MigrationArea(root, got.publish)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(area.run)
            await until(lambda: area.watching == root)
            await area.advance(MID, "understand")
            topic, _, data = await got.next()
            assert (topic, data["phase"], data["next"]) == (
                "migration.advanced",
                "understand",
                "guardrail",
            )
            await area.start_phase(MID, "verify")
            topic, _, data = await got.next()
            assert (topic, data["phase"]) == ("migration.phase-started", "verify")
            await area.checkpoint(MID, "s1")
            assert (await got.next())[0] == "migration.checkpoint"
            await area.progress(MID, "me", "did it")
            assert (await got.next())[0] == "migration.progress"
            nursery.cancel_scope.cancel()
        assert got.pending() == []

    trio.run(main)


def test_the_watcher_stops_promptly_on_close_and_on_cancel(root):
    root.mkdir(parents=True)
    area = MigrationArea(root)

    async def main() -> tuple[float, float]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(area.run)
            await until(lambda: area.watching == root)
            start = time.monotonic()
            area.close()
        closed = time.monotonic() - start
        again = MigrationArea(root)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(again.run)
            await until(lambda: again.watching == root)
            start = time.monotonic()
            nursery.cancel_scope.cancel()
        return closed, time.monotonic() - start

    closed, cancelled = trio.run(main)
    # watchfiles' own timeout is 5 s; its stop event is seen within a 5 ms step.
    assert closed < 1 and cancelled < 1, (closed, cancelled)


def test_after_a_reload_changes_are_still_reported_once(root, folder):
    got = Events()
    area = MigrationArea(root, got.publish)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(area.run)
            await until(lambda: area.watching == root)
            area.reload()
            await trio.to_thread.run_sync(run_writer, "start", str(folder), "verify")
            topic, _, data = await got.next()
            assert (topic, data["phase"]) == ("migration.phase-started", "verify")
            nursery.cancel_scope.cancel()
        assert got.pending() == []
        assert area.idle()

    trio.run(main)


def test_default_root_follows_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_root() == tmp_path / ".loki" / "migrations"
    assert MigrationArea().root == tmp_path / ".loki" / "migrations"
    assert os.environ["HOME"] == str(tmp_path)
