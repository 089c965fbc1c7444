"""Appending a session to progress.md under the manifest lock (Loki Mode's cap kept).

The session's phase comes from the manifest read inside the same critical
section, so it is the phase at the time of the append. Blocking: worker threads.
"""

from __future__ import annotations

from dataclasses import dataclass

from lokid.domain import migration as rules
from lokid.domain.migration import Details
from lokid.migrations.folder import MigrationFolder, phases_of
from lokid.migrations.lock import manifest_lock


@dataclass(frozen=True, slots=True)
class Appended:
    phase: str  # the session's `Phase:` line
    sessions: int  # sessions in progress.md afterwards


def append(
    folder: MigrationFolder,
    agent: str,
    summary: str,
    details: Details | None,
    now: str,
    timeout: float,
) -> Appended:
    folder.read_manifest()
    with manifest_lock(folder.path, timeout):
        phase = rules.session_phase(phases_of(folder.read_manifest()))
        entry = rules.progress_entry(now, agent, phase, summary, details)
        text = rules.append_session(folder.read_progress(), entry)
        folder.write_progress(text)
    return Appended(phase, len(rules.session_blocks(text)))
