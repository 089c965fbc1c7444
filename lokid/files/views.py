"""lokid's tasks in Loki Mode's queue files, shared with Loki Mode's own writers.

Each file holds lokid's block of entries beside Loki Mode's (queue_files.py says whose is
whose and how they merge). A write is read-merge-write: under the locks Loki Mode's tools
take for that file, lokid reads the file as it is, keeps every entry that is not lokid's
byte for byte, replaces its own block from the database, and renames the result over.
Some of Loki Mode's writers take no lock and rewrite the file in place (`open('w')`):
lokid keeps the file it read open, and if its signature changed before lokid's rename
(anyone) or its inode was written after it (an in-place writer whose bytes went into the
file lokid just replaced), the merge is done again from what that writer wrote. A file
that does not parse may be in the middle of such a write: it is read again once it has
settled, and only a file that stays bad is copied to `quarantine/` (once per content).

    state         files                           lokid's block (where it was, else)
    pending       pending.json                    last
    in-progress   in-progress.json                last; none while a Loki Mode run is live
    completed     completed.json (newest N)       first: Loki Mode caps the file to 50
    dead-letter   failed.json, dead-letter.json   first: failed.json is capped too
    cancelled     cancelled.json                  last

While a Loki Mode run is live in the project, lokid's in-progress tasks stay out of
in-progress.json: its runner tells its agent to execute the first three entries there.
failed.json is where Loki Mode looks for failures (`loki status`, the dashboard, the
completion council, which refuses completion while it is non-empty).

Views follow the database, never lead it: a reply waits for the commit, not for these
files. Changes are coalesced, and the writer never runs more than about a fifth of the
time. Before pending.json is written, the tasks others added to it are imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from lokid.domain.queue import LOKI_STATUS
from lokid.errors import BadFile, LokidError
from lokid.files import queue_files
from lokid.files.atomic import signature, write_atomic, write_exchanging
from lokid.files.locks import queue_file_lock
from lokid.files.quarantine import quarantine
from lokid.files.reading import QUEUE_FILE_MAX, FileProblem, problem
from lokid.store.base import ViewReader
from lokid.wire.messages import UNDECODABLE

log = logging.getLogger("lokid.views")

# Each view file and the state whose tasks it shows.
VIEW_FILES = {
    "pending.json": "pending",
    "in-progress.json": "in-progress",
    "completed.json": "completed",
    "failed.json": "dead-letter",
    "dead-letter.json": "dead-letter",
    "cancelled.json": "cancelled",
}
STATES = tuple(dict.fromkeys(VIEW_FILES.values()))
BREAKERS = "breakers"
DUTY = 4  # wait at least DUTY x the last write's cost before the next one
RETRY_AFTER_ERROR = 1.0
ATTEMPTS = 5  # merges of one file, while writers keep changing it
SETTLE = 0.1  # seconds a file that does not parse is given to finish being written
SETTLE_TRIES = 10
SETTLE_AFTER = 0.02  # seconds an in-place writer is given to show itself after our write
IMPORT_CHUNK = 1000  # tasks imported per transaction: the daemon serves others between

Import = Callable[[list[Any], int], tuple[int, int, list[str]]]
Signature = tuple[int, int, int]
_TMP = re.compile(r"^\..+\.lokid-(\d+)\.tmp$")
_decode = msgspec.json.decode


class _Current:
    """A view file as lokid read it: its bytes, signature, and the open file (so a write
    into that very inode after lokid's rename can be seen)."""

    __slots__ = ("data", "fd", "sig")

    def __init__(self, data: bytes, sig: Signature | None, fd: int | None) -> None:
        self.data, self.sig, self.fd = data, sig, fd

    def changed_since(self) -> bool:
        """The inode lokid read was written after it read it."""
        if self.fd is None:
            return False
        return signature(os.fstat(self.fd)) != self.sig

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ViewWriter:
    def __init__(
        self,
        loki: Path,
        reader: Callable[[], ViewReader],
        *,
        completed_keep: int,
        delay: float,
        import_entries: Import,
        quarantined: Callable[[Path, Path, str], None],
        breakers_json: Callable[[], bytes],
        run_live: Callable[[], bool],
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
        self._run_live = run_live
        self._dirty: set[str] = set()
        self._wake = trio.Event()
        self._cost = 0.0
        self._busy = 0.0
        self.own_writes: dict[Path, Signature] = {}
        self._quarantined_digests: set[str] = set()
        self._retired = False
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
        await trio.to_thread.run_sync(self._remove_stale_temps)
        while not self._retired:
            await self._wake.wait()
            if self._retired:
                return
            self._wake = trio.Event()
            await trio.sleep(max(self.delay, self._cost * DUTY))
            dirty, self._dirty = self._dirty, set()
            breakers = self._breakers_json() if BREAKERS in dirty else None
            self._busy = 0.0
            failed = await trio.to_thread.run_sync(self._write, dirty, breakers, True)
            self._cost = self._busy  # our own work; time spent waiting for locks is not cost
            if failed:
                self._dirty |= failed
                self._wake.set()
                await trio.sleep(RETRY_AFTER_ERROR)

    def flush_now(self) -> None:
        """Write what is still dirty, here and now (at shutdown: a clean stop leaves the
        files equal to the database). Imports wait for the next start."""
        dirty, self._dirty = self._dirty, set()
        if dirty:
            breakers = self._breakers_json() if BREAKERS in dirty else None
            self._write(dirty, breakers, False)

    async def import_now(self) -> tuple[int, int, str | None]:
        """`queue.import`: read pending.json now, under its locks, and import what is new."""
        try:
            return await trio.to_thread.run_sync(self._import_locked)
        except OSError as exc:  # a queue folder lokid may not enter, a symlink loop, ...
            raise problem(self.queue_dir, exc) from exc

    # -- in a worker thread ------------------------------------------------------------

    def _db(self) -> ViewReader:
        if self._reader is None:
            self._reader = self._reader_factory()
        return self._reader

    def _write(self, dirty: set[str], breakers: bytes | None, importing: bool) -> set[str]:
        """Write each dirty view on its own; returns the states to try again."""
        if not self.loki.parent.is_dir():
            return dirty  # the project folder is gone: never recreate it, wait for it
        failed: set[str] = set()
        for name, state in VIEW_FILES.items():
            if state in dirty:
                try:
                    self._write_file(name, state, importing)
                except (LokidError, OSError, BadFile) as exc:
                    why = exc.message if isinstance(exc, LokidError) else exc
                    log.warning("could not write %s in %s: %s; will retry", name, self.loki, why)
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

    def _write_file(self, name: str, state: str, importing: bool) -> None:
        path = self.queue_dir / name
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        with queue_file_lock(self.queue_dir, name.removesuffix(".json")):
            started = time.monotonic()
            try:
                self._merge_into(path, state, importing and name == "pending.json")
            finally:
                self._busy += time.monotonic() - started

    def _merge_into(self, path: Path, state: str, importing: bool) -> None:
        """Read, merge, write; again from what an unlocked writer wrote meanwhile.

        The write exchanges the new file with the one at the path (renameat2), so what a
        writer put there after our read comes back to us instead of being overwritten; and
        the file we read stays open, so bytes written into it in place (`open('w')`) after
        our read are seen too. Either way the merge is done again from their bytes."""
        current = _open_current(path)
        try:
            for _ in range(ATTEMPTS):
                parsed = self._parse_settled(path, current)
                if importing:
                    self._import_foreign(path, parsed, current.data)
                ours = queue_files.lokid_entries(parsed, self._db().known)
                data = queue_files.merge(parsed, ours, self._block(state), path.stem)
                written, displaced = write_exchanging(path, data)
                self.own_writes[path] = signature(written)
                theirs = self._written_meanwhile(current, displaced)
                if theirs is None:
                    return
                current.close()
                current = theirs
            log.info("%s keeps changing; the view waits for the next change", path)
        finally:
            current.close()

    def _written_meanwhile(self, current: _Current, displaced: Path | None) -> _Current | None:
        """What others wrote since `current` was read, or None when nothing was."""
        if displaced is not None:
            try:
                fd = os.open(displaced, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                try:
                    replaced = _read_open(displaced, fd)
                except BaseException:
                    os.close(fd)
                    raise
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(displaced)
            if replaced.sig != current.sig:
                return replaced  # someone replaced the file after our read
            replaced.close()
        elif current.sig is None:
            return None  # nothing was there when we read, nor when we wrote
        # The very file we read: an in-place writer may have written into it, or be
        # writing right now (`open('w')` truncates, then writes).
        time.sleep(SETTLE_AFTER)
        return _reread(current) if current.changed_since() else None

    def _block(self, state: str) -> bytes:
        if state == "in-progress" and self._run_live():
            return b""  # a live Loki Mode run would be told to execute these
        keep = self.completed_keep if state == "completed" else None
        return self._db().read(state, LOKI_STATUS[state], keep)

    def _parse_settled(self, path: Path, current: _Current) -> queue_files.QueueFile:
        """The file's entries; a file that does not parse is given time to finish being
        written, and one that stays bad is quarantined (once per content) and replaced."""
        for _ in range(SETTLE_TRIES):
            try:
                return queue_files.parse(current.data)
            except BadFile as exc:
                error = str(exc)
            time.sleep(SETTLE)
            again = _open_current(path)
            if again.data == current.data:
                again.close()
                break  # settled, and still bad
            current.close()
            current.data, current.sig, current.fd = again.data, again.sig, again.fd
        self._quarantine_once(path, current.data, error)
        return queue_files.QueueFile([])

    def _quarantine_once(self, path: Path, data: bytes, why: str) -> str | None:
        digest = hashlib.sha256(data).hexdigest()
        if digest in self._quarantined_digests:
            return None
        copy = quarantine(path, self.queue_dir / "quarantine", data)
        self._quarantined_digests.add(digest)
        trio.from_thread.run_sync(self._quarantined, path, copy, why)
        return str(copy)

    def _import_foreign(
        self, path: Path, parsed: queue_files.QueueFile, data: bytes
    ) -> tuple[int, int, str | None]:
        """Import the entries others added, in chunks (each its own transaction, so the
        daemon serves its clients between them); a file with entries that cannot be
        tasks is copied to quarantine, and those entries stay where they are."""
        ours = queue_files.lokid_entries(parsed, self._db().known)
        entries: list[Any] = []
        for index, entry in enumerate(parsed.entries):
            if index not in ours:
                try:
                    entries.append(_decode(entry.raw))
                except UNDECODABLE:
                    entries.append(None)
        imported = skipped = 0
        problems: list[str] = []
        for start in range(0, len(entries), IMPORT_CHUNK):
            chunk = entries[start : start + IMPORT_CHUNK]
            done = trio.from_thread.run_sync(self._import, chunk, start)
            imported, skipped = imported + done[0], skipped + done[1]
            problems += done[2]
        copy = self._quarantine_once(path, data, "; ".join(problems[:5])) if problems else None
        return imported, skipped, copy

    def _import_locked(self) -> tuple[int, int, str | None]:
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        path = self.queue_dir / "pending.json"
        with queue_file_lock(self.queue_dir, "pending"):
            current = _open_current(path)
            try:
                if current.sig is None:
                    return 0, 0, None
                try:
                    parsed = queue_files.parse(current.data)
                except BadFile as exc:
                    copy = self._quarantine_once(path, current.data, str(exc))
                    return 0, 0, copy
                return self._import_foreign(path, parsed, current.data)
            finally:
                current.close()

    def _remove_stale_temps(self) -> None:
        """Temp files of a lokid that was killed mid-write (its pid is gone)."""
        for folder in (self.queue_dir, self.loki / "state"):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                match = _TMP.match(name)
                if match and not _alive(int(match.group(1))):
                    with contextlib.suppress(OSError):
                        os.unlink(folder / name)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _open_current(path: Path) -> _Current:
    """The file now: opened without blocking, a regular file, within the size limit."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return _Current(b"", None, None)
    except OSError as exc:
        raise problem(path, exc) from exc
    try:
        return _read_open(path, fd)
    except BaseException:
        os.close(fd)
        raise


def _read_open(path: Path, fd: int) -> _Current:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem(f"cannot use {path}: not a regular file; Loki Mode's tools cannot either")
    if st.st_size > QUEUE_FILE_MAX:
        raise FileProblem(
            f"cannot use {path}: {st.st_size} bytes, over the {QUEUE_FILE_MAX}-byte limit"
        )
    chunks, offset = [], 0
    while offset < st.st_size:
        chunk = os.pread(fd, st.st_size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return _Current(b"".join(chunks), signature(st), fd)


def _reread(current: _Current) -> _Current:
    """What an in-place writer put into the inode lokid read (now replaced by lokid's)."""
    fd, current.fd = current.fd, None
    assert fd is not None
    return _read_open(Path(f"/proc/self/fd/{fd}"), fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
