"""lokid and other processes changing one migration at once, each read-modify-write
under Loki Mode 7.63's manifest lock: nothing any of them did is lost."""

from __future__ import annotations

import itertools
import subprocess
from collections import Counter

import trio
from migration_support import (
    MID,
    git_repo,
    make_migration,
    pass_understand_gate,
    read_manifest,
    sessions,
    tags,
    writer,
)

from lokid.migrations import MigrationArea

WRITERS = 3
OUTSIDE_CHECKPOINTS = 100  # per writer
OUTSIDE_SESSIONS = 10  # per writer
LOKID_CHECKPOINTS = 60
LOKID_CYCLES = 60  # advance understand, then start it again
LOKID_SESSIONS = 20  # with the writers' 30: 50, all within Loki Mode's cap


def test_no_checkpoint_phase_change_or_session_is_lost(tmp_path):
    codebase = git_repo(tmp_path / "app")
    root = tmp_path / "home" / ".loki" / "migrations"
    folder = make_migration(root, codebase)
    pass_understand_gate(folder)
    area = MigrationArea(root, lock_timeout=60)
    procs = [
        writer(
            "mixed",
            str(folder),
            f"w{n}",
            str(OUTSIDE_CHECKPOINTS),
            str(OUTSIDE_SESSIONS),
            str(n),
            stdin=subprocess.PIPE,
        )
        for n in range(WRITERS)
    ]
    phase_log: list[tuple[str, bool]] = []

    async def checkpoints() -> None:
        for i in range(LOKID_CHECKPOINTS):
            await area.checkpoint(MID, f"lokid_{i}")

    async def phases() -> None:
        for _ in range(LOKID_CYCLES):
            await area.advance(MID, "understand")  # conflict if a start was lost
            started = await area.start_phase(MID, "understand")
            phase_log.append(("start", started.started))  # False if an advance was lost

    async def progress() -> None:
        for i in range(LOKID_SESSIONS):
            await area.progress(MID, "lokid", f"lokid-{i}")

    async def main() -> None:
        for proc in procs:
            assert proc.stdout.readline() == "ready\n"
        async with trio.open_nursery() as nursery:
            for proc in procs:
                proc.stdin.write("go\n")
                proc.stdin.flush()
            nursery.start_soon(checkpoints)
            nursery.start_soon(phases)
            nursery.start_soon(progress)

    try:
        trio.run(main)
        for proc in procs:
            assert proc.wait(120) == 0, proc.stderr.read()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()

    manifest = read_manifest(folder)
    expected = [f"loki-migrate/lokid_{i}/pre" for i in range(LOKID_CHECKPOINTS)] + [
        f"loki-migrate/w{n}_{i}/pre" for n in range(WRITERS) for i in range(OUTSIDE_CHECKPOINTS)
    ]
    assert Counter(manifest["checkpoints"]) == Counter(expected)
    assert sorted(tags(codebase)) == sorted(expected[:LOKID_CHECKPOINTS])
    assert phase_log == [("start", True)] * LOKID_CYCLES
    assert manifest["phases"]["understand"]["status"] == "in_progress"
    assert manifest["phases"]["guardrail"]["status"] == "in_progress"
    summaries = [s["Summary"] for s in sessions(folder)]
    assert Counter(summaries) == Counter(
        [f"lokid-{i}" for i in range(LOKID_SESSIONS)]
        + [f"w{n}-{i}" for n in range(WRITERS) for i in range(OUTSIDE_SESSIONS)]
    )
    # The runs overlapped: lokid's and the writers' checkpoints alternate many times.
    owners = ["lokid" if "lokid_" in tag else "w" for tag in manifest["checkpoints"]]
    switches = sum(1 for a, b in itertools.pairwise(owners) if a != b)
    assert switches >= 20, switches
