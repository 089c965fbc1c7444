"""The queue's JSON views, `.loki/queue/<state>.json`, for Loki Mode's own tools.

Views follow the database, never lead it: a reply waits for the commit, not
for these files. Changes are coalesced, and the writer never runs more than
about a fifth of the time, so a burst of ten thousand operations causes a
handful of rewrites however large the queue. Each file is written as a bare
JSON array, tmp + fsync + rename, under the locks Loki Mode's tools take.

Before rewriting pending.json, under its locks, tasks that someone else
added to it since our last write are imported first, so none is lost.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from lokid.errors import BadFile, LokidError, Unavailable
from lokid.files.atomic import signature, signature_of, write_atomic
from lokid.files.locks import queue_file_lock
from lokid.files.pending import parse_pending, quarantine
from lokid.store.base import ViewReader

log = logging.getLogger("lokid.views")

VIEW_FILES = {
    "pending": "pending.json",
    "in-progress": "in-progress.json",
    "completed": "completed.json",
    "dead-letter": "dead-letter.json",
    "cancelled": "cancelled.json",
}
BREAKERS = "breakers"
# Wait at least DUTY x the last write's cost before the next one: the writer takes at most
# ~1/13 of a core, and under a burst of requests the CPU stays with them (measured with 8
# agents at 40,000 pending, 4 cost each cycle ~30 us of rewriting).
DUTY = 12
RETRY_AFTER_ERROR = 1.0
PENDING_ATTEMPTS = 5  # imports before a rewrite of pending.json, while it keeps changing


class ViewWriter:
    def __init__(
        self,
        loki: Path,
        reader: Callable[[], ViewReader],
        *,
        completed_keep: int,
        delay: float,
        import_entries: Callable[[list[Any]], tuple[int, int, list[str]]],
        quarantined: Callable[[Path, Path, str], None],
        breakers_json: Callable[[], bytes],
    ) -> None:
        self.loki = loki
        self.queue_dir = loki / "queue"
        self._reader_factory = reader
        self._reader: ViewReader | None = None
        self.completed_keep = completed_keep
        self.delay = delay
        self._import = import_entries
        self._quarantined = quarantined
        self._breakers_json = breakers_json
        self._dirty: set[str] = set()
        self._wake = trio.Event()
        self._cost = 0.0
        self._busy = 0.0
        self.own_writes: dict[Path, tuple[int, int, int]] = {}
        self._retired = False
        self._last_bad: tuple[tuple[int, int, int], str] | None = None
        self.writes = 0

    def mark(self, states: set[str] | frozenset[str] | list[str]) -> None:
        self._dirty.update(states)
        self._wake.set()

    def is_own_write(self, path: Path) -> bool:
        """True when `path` is exactly as lokid last wrote it (the watcher ignores those)."""
        try:
            return self.own_writes.get(path) == signature(os.stat(path))
        except OSError:
            return False

    def retire(self) -> None:
        """Stop after the current write (the project went away)."""
        self._retired = True
        self._wake.set()

    async def run(self) -> None:
        while not self._retired:
            await self._wake.wait()
            if self._retired:
                return
            self._wake = trio.Event()
            await trio.sleep(max(self.delay, self._cost * DUTY))
            dirty, self._dirty = self._dirty, set()
            breakers = self._breakers_json() if BREAKERS in dirty else None
            self._busy = 0.0
            failed = await trio.to_thread.run_sync(self._write, dirty, breakers)
            self._cost = self._busy  # our own work; time spent waiting for locks is not cost
            if failed:
                self._dirty |= failed
                self._wake.set()
                await trio.sleep(RETRY_AFTER_ERROR)

    async def import_now(self) -> tuple[int, int, str | None]:
        """`queue.import`: read pending.json now, under its locks."""
        return await trio.to_thread.run_sync(self._import_locked)

    # -- in a worker thread ------------------------------------------------------------

    def _db(self) -> ViewReader:
        if self._reader is None:
            self._reader = self._reader_factory()
        return self._reader

    def _write(self, dirty: set[str], breakers: bytes | None) -> set[str]:
        """Write each dirty view on its own; returns those that must be tried again."""
        if not self.loki.parent.is_dir():
            return dirty  # the project folder is gone: never recreate it, wait for it
        failed: set[str] = set()
        for state in VIEW_FILES:
            if state in dirty:
                try:
                    self._write_state(state)
                except (LokidError, OSError) as exc:
                    log.warning(
                        "could not write %s.json in %s: %s; will retry", state, self.loki, exc
                    )
                    failed.add(state)
        if breakers is not None:
            path = self.loki / "state" / "circuit-breakers.json"
            try:
                self.own_writes[path] = signature(write_atomic(path, breakers))
            except OSError as exc:
                log.warning("could not write %s: %s; will retry", path, exc)
                failed.add(BREAKERS)
        self.writes += 1
        return failed

    def _write_state(self, state: str) -> None:
        path = self.queue_dir / VIEW_FILES[state]
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        with queue_file_lock(self.queue_dir, state):
            started = time.monotonic()
            # completed.json: the newest N, oldest first, as Loki Mode appends.
            keep = self.completed_keep if state == "completed" else None
            if state != "pending":
                written = write_atomic(path, self._db().read(state, keep))
            else:
                written = self._write_pending(path)
            if written is not None:
                self.own_writes[path] = signature(written)
            self._busy += time.monotonic() - started

    def _write_pending(self, path: Path) -> os.stat_result | None:
        """Import what others added, then write the view, unless the file changed again
        meanwhile: some of Loki Mode's tools write pending.json without taking its lock."""
        for _ in range(PENDING_ATTEMPTS):
            seen = signature_of(path)
            self._import_external(path, only_if_changed=True)
            data = self._db().read("pending")
            written = write_atomic(path, data, still=lambda seen=seen: signature_of(path) == seen)
            if written is not None:
                return written
        log.info("pending.json in %s keeps changing; the view waits for the next change", self.loki)
        return None

    def _import_locked(self) -> tuple[int, int, str | None]:
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        with queue_file_lock(self.queue_dir, "pending"):
            return self._import_external(self.queue_dir / "pending.json", only_if_changed=False)

    def _import_external(self, path: Path, only_if_changed: bool) -> tuple[int, int, str | None]:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return 0, 0, None
        if only_if_changed and self.own_writes.get(path) == signature(st):
            return 0, 0, None
        if not stat.S_ISREG(st.st_mode):
            raise Unavailable(
                f"{path} is not a regular file; Loki Mode's tools cannot use it either"
            )
        data = path.read_bytes()
        try:
            entries = parse_pending(data)
        except BadFile as exc:
            if self._last_bad is not None and self._last_bad[0] == signature(st):
                return 0, 0, self._last_bad[1]  # this very file is in quarantine already
            copy = self._quarantine(path, str(exc))
            self._last_bad = (signature(st), copy)
            return 0, 0, copy
        imported, skipped, problems = trio.from_thread.run_sync(self._import, entries)
        copy = None
        if problems:
            copy = self._quarantine(path, "; ".join(problems[:5]))
        return imported, skipped, copy

    def _quarantine(self, path: Path, reason: str) -> str:
        copy = quarantine(path, self.queue_dir / "quarantine")
        trio.from_thread.run_sync(self._quarantined, path, copy, reason)
        return str(copy)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
