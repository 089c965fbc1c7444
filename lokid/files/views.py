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
import threading
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
from lokid.files.pids import alive
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
# Wait at least DUTY x the last write's cost before the next one: the writer takes at most
# ~1/13 of a core, and under a burst of requests the CPU stays with them (measured with 8
# agents at 40,000 pending, 4 cost each cycle ~30 us of rewriting).
DUTY = 12
RETRY_AFTER_ERROR = 1.0  # the first retry of a write that failed; doubled up to RETRY_MAX
RETRY_MAX = 30.0  # (a change to the queue or the file retries at once)
ATTEMPTS = 5  # merges of one file, while writers keep changing it
SETTLE = 0.1  # seconds a file that does not parse is given to finish being written
SETTLE_TRIES = 5
QUARANTINE_AFTER = 2.0  # seconds a file must stay bad (unchanged) before it is quarantined
RACY_NS = 20_000_000  # file timestamps can be as coarse as a kernel tick (up to 10 ms)
ORPHAN_WATCH = 0.25  # seconds before replaced files are looked at again when all is quiet
ORPHAN_QUIET = 3.0  # a replaced file left alone this long is no longer watched
MAX_ORPHANS = 128  # replaced files watched per view file at most
MAX_COPIES_REMEMBERED = 1024
IMPORT_CHUNK = 1000  # tasks imported per transaction: the daemon serves others between

Import = Callable[[list[Any], int], tuple[int, int, list[str]]]
Signature = tuple[int, int, int]
_TMP = re.compile(r"^\..+\.lokid-(\d+)\.tmp$")
_decode = msgspec.json.decode


class Unsettled(BadFile):
    """A view file that does not parse yet (it may be in the middle of a write)."""


class _Current:
    """A view file as lokid read it: its bytes, signature, and the open file (so a write
    into that very inode after lokid's rename can be seen)."""

    __slots__ = ("data", "fd", "quiet_since", "read_ns", "sig")

    def __init__(
        self, data: bytes, sig: Signature | None, fd: int | None, read_ns: int = 0
    ) -> None:
        self.data, self.sig, self.fd = data, sig, fd
        self.read_ns = read_ns or time.time_ns()
        self.quiet_since = time.monotonic()

    def changed_since(self) -> bool:
        """The inode lokid read was written after it read it. Its signature says so, except
        for a write within a timestamp tick of our read (same size): the bytes tell then."""
        if self.fd is None:
            return False
        st = os.fstat(self.fd)
        if signature(st) != self.sig:
            return True
        if self.read_ns - st.st_mtime_ns > RACY_NS:
            return False
        return _read_open(Path(f"/proc/self/fd/{self.fd}"), self.fd).data != self.data

    def refresh(self, path: Path) -> None:
        """Read again: the same file (an in-place writer may have finished by now)."""
        if self.fd is None:
            again = _open_current(path)
        else:
            again = _read_open(path, self.fd)
            self.fd = None
        self.close()
        self.data, self.sig, self.fd, self.read_ns = again.data, again.sig, again.fd, again.read_ns

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
        # The writer's thread and `queue.import`'s share the reader: one at a time.
        self._db_lock = threading.Lock()
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
        self._copies: dict[str, str] = {}  # the quarantined copy of each bad content
        # When lokid first saw each bad file (by signature: a rewrite is a new file).
        self._bad_since: dict[tuple[Path, Signature | None], float] = {}
        # Files lokid replaced, kept open until the next merge (see _keep_orphan).
        self._orphans: dict[Path, list[_Current]] = {}
        self._recheck: set[str] = set()
        self._retired = False
        self._retry = 0.0  # seconds before the next try of a write that failed
        self._failing: dict[str, str] = {}  # file -> why it cannot be written (said once)
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
                self._retry = min(2 * self._retry, RETRY_MAX) if self._retry else RETRY_AFTER_ERROR
                with trio.move_on_after(self._retry):
                    await self._wake.wait()  # the file mended, the queue moved: try now
                self._wake.set()
                continue
            self._retry = 0.0
            if self._recheck and not self._dirty:
                # Look at the files we replaced once more, in a moment: an in-place writer
                # that opened one before our write may write into it after.
                await trio.sleep(ORPHAN_WATCH)
                recheck, self._recheck = self._recheck, set()
                self.mark(recheck)

    def flush_now(self) -> None:
        """Write what is still dirty, here and now (at shutdown: a clean stop leaves the
        files equal to the database). Imports wait for the next start."""
        dirty, self._dirty = self._dirty, set()
        if dirty:
            breakers = self._breakers_json() if BREAKERS in dirty else None
            self._write(dirty, breakers, False)

    async def import_now(self, wait: bool = True) -> tuple[int, int, str | None]:
        """Read pending.json now, under its locks, and import what is new. A file that does
        not parse yet is waited for (`wait`: `queue.import` answers with what became of it,
        imported or quarantined) or left to the writer, which tries again until it settles."""
        while True:
            try:
                return await trio.to_thread.run_sync(self._import_locked)
            except Unsettled as exc:
                if not wait:
                    log.info("%s; imported when it has", exc)
                    self.mark({"pending"})
                    return 0, 0, None
            except OSError as exc:  # a queue folder lokid may not enter, a symlink loop, ...
                raise problem(self.queue_dir, exc) from exc
            await trio.sleep(SETTLE)

    # -- in a worker thread ------------------------------------------------------------

    def _known(self, ids: list[str]) -> set[str]:
        with self._db_lock:
            return self._db().known(ids)

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
                except Unsettled as exc:
                    log.info("%s; will retry", exc)
                    failed.add(state)
                except (LokidError, OSError, BadFile) as exc:
                    self._complain(name, exc.message if isinstance(exc, LokidError) else str(exc))
                    failed.add(state)
                else:
                    self._mended(name)
        if breakers is not None:
            path = self.loki / "state" / "circuit-breakers.json"
            try:
                self.own_writes[path] = signature(write_atomic(path, breakers))
            except OSError as exc:
                self._complain(path.name, str(exc))
                failed.add(BREAKERS)
            else:
                self._mended(path.name)
        self.writes += 1
        return failed

    def _complain(self, name: str, why: str) -> None:
        """A file lokid cannot write: said once per reason, then retried quietly."""
        if self._failing.get(name) != why:
            self._failing[name] = why
            log.warning("could not write %s in %s: %s; will retry", name, self.loki, why)

    def _mended(self, name: str) -> None:
        if self._failing.pop(name, None) is not None:
            log.info("%s in %s is written again", name, self.loki)

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

        The write exchanges the new file with the one at the path (renameat2), so a file
        someone put at the path after our read comes back to us and is merged, instead of
        being overwritten. Every file taken off the path stays open (an orphan, see
        `_base`): an in-place writer (`open('w')`) that opened it before the exchange may
        write into it after, and that write is merged too."""
        now = _open_current(path)
        try:
            base = self._base(path, now, state)
            source = merged = now.data  # what `base` was parsed from; what the path held
            for attempt in range(ATTEMPTS):
                if importing:
                    self._import_foreign(path, base, source)
                ours = queue_files.lokid_entries(base, self._known)
                data = queue_files.merge(base, ours, self._block(state), path.stem)
                if attempt == 0 and data == now.data:
                    return  # nothing to change: a write would only race other writers
                written, displaced = write_exchanging(path, data)
                self.own_writes[path] = signature(written)
                replaced = _take_displaced(displaced)
                if replaced is None:
                    return
                if replaced.data == merged:  # by content: timestamps can be coarse
                    self._keep_orphan(path, state, replaced)  # changes from now on: later
                    return
                if attempt == ATTEMPTS - 1:  # too many to chase: merged by id, in a moment
                    log.info("%s keeps changing; merged again in a moment", path)
                    self._keep_orphan(path, state, _Current(merged, None, replaced.fd))
                    replaced.fd = None
                    return
                # Someone wrote the file at the path after our read: merge theirs now (our
                # own file is at the path, and is what the next exchange hands back).
                base = self._base(path, replaced, state)
                source = replaced.data
                self._keep_orphan(path, state, replaced)
                merged = data
        finally:
            now.close()

    def _base(self, path: Path, now: _Current, state: str) -> queue_files.QueueFile:
        """What to merge: the file now, with the changes in-place writers made to the files
        we replaced before (the orphans) since we read them, each applied by id."""
        current = self._settled(path, now)
        kept: list[_Current] = []
        for orphan in self._orphans.pop(path, []):
            if orphan.changed_since():
                base = _parse_or_empty(orphan.data)  # what we read of it
                orphan.refresh(path)  # through its open descriptor: the path is ours now
                theirs = self._settled(path, orphan)  # what they made of it
                current = _three_way(base, theirs, current)
                orphan.quiet_since = time.monotonic()
            if time.monotonic() - orphan.quiet_since < ORPHAN_QUIET:
                kept.append(orphan)
            else:
                orphan.close()
        if kept:
            self._orphans[path] = kept
            self._recheck.add(state)
        return current

    def _keep_orphan(self, path: Path, state: str, now: _Current) -> None:
        """Keep the file we just replaced open: an in-place writer that opened it before
        our write may write into it after. The next merges of this file look at it until
        it has been quiet for a while (and one is scheduled)."""
        if now.fd is None:
            return
        orphans = self._orphans.setdefault(path, [])
        orphans.append(_Current(now.data, now.sig, now.fd, now.read_ns))
        now.fd = None
        while len(orphans) > MAX_ORPHANS:
            orphans.pop(0).close()
        self._recheck.add(state)

    def _block(self, state: str) -> bytes:
        if state == "in-progress" and self._run_live():
            return b""  # a live Loki Mode run would be told to execute these
        keep = self.completed_keep if state == "completed" else None
        with self._db_lock:
            return self._db().read(state, LOKI_STATUS[state], keep)

    def _settled(self, path: Path, current: _Current) -> queue_files.QueueFile:
        """A file's entries. One that does not parse, or is empty (Loki Mode's writers
        always write at least `[]`: an empty file is one being written), is read again
        while it changes. One that stays bad for QUARANTINE_AFTER seconds is quarantined
        (once per content) and counts as empty; until then nothing is written over it
        (`Unsettled`: the write is tried again later)."""
        error = "empty"
        for _ in range(SETTLE_TRIES):
            if current.data or current.sig is None:
                try:
                    return queue_files.parse(current.data)
                except BadFile as exc:
                    error = str(exc)
            time.sleep(SETTLE)
            current.refresh(path)
        if not current.data:
            return queue_files.QueueFile([])
        first = self._first_bad(path, current.sig)
        if time.monotonic() - first < QUARANTINE_AFTER:
            raise Unsettled(f"{path} does not parse yet ({error}); waiting for it to settle")
        self._quarantine_once(path, current.data, error)
        return queue_files.QueueFile([])

    def _first_bad(self, path: Path, sig: Signature | None) -> float:
        """When lokid first saw this bad file (forgetting files long gone)."""
        now = time.monotonic()
        if len(self._bad_since) > MAX_ORPHANS:
            old = [k for k, t in self._bad_since.items() if now - t > 10 * QUARANTINE_AFTER]
            for key in old:
                del self._bad_since[key]
        return self._bad_since.setdefault((path, sig), now)

    def _quarantine_once(self, path: Path, data: bytes, why: str) -> str:
        """The copy of `data` in quarantine/: made (and announced) the first time only."""
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self._copies:
            copy = quarantine(path, self.queue_dir / "quarantine", data)
            self._copies[digest] = str(copy)
            if len(self._copies) > MAX_COPIES_REMEMBERED:
                del self._copies[next(iter(self._copies))]
            trio.from_thread.run_sync(self._quarantined, path, copy, why)
        return self._copies[digest]

    def _import_foreign(
        self, path: Path, parsed: queue_files.QueueFile, data: bytes
    ) -> tuple[int, int, str | None]:
        """Import the entries others added, in chunks (each its own transaction, so the
        daemon serves its clients between them); a file with entries that cannot be
        tasks is copied to quarantine, and those entries stay where they are."""
        ours = queue_files.lokid_entries(parsed, self._known)
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
                parsed = self._settled(path, current)
                imported, skipped, copy = self._import_foreign(path, parsed, current.data)
                if copy is None:  # a file that never parsed: the copy `_settled` made
                    copy = self._copies.get(hashlib.sha256(current.data).hexdigest())
                return imported, skipped, copy
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
                if match and not alive(int(match.group(1))):
                    with contextlib.suppress(OSError):
                        os.unlink(folder / name)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        for orphans in self._orphans.values():
            for orphan in orphans:
                orphan.close()
        self._orphans.clear()


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
    read_ns = time.time_ns()  # before: a write after this shows in a later timestamp
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
    return _Current(b"".join(chunks), signature(st), fd, read_ns)


def _take_displaced(displaced: Path | None) -> _Current | None:
    """The file the exchange handed back (read, then removed from its temporary name)."""
    if displaced is None:
        return None
    try:
        fd = os.open(displaced, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            return _read_open(displaced, fd)
        except BaseException:
            os.close(fd)
            raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(displaced)


def _parse_or_empty(data: bytes) -> queue_files.QueueFile:
    try:
        return queue_files.parse(data)
    except BadFile:
        return queue_files.QueueFile([])


def _three_way(
    base: queue_files.QueueFile, theirs: queue_files.QueueFile, now: queue_files.QueueFile
) -> queue_files.QueueFile:
    """Two writers wrote since lokid's last read (`base`): one into the file lokid replaced
    (`theirs`), one at the path (`now`). `now`, with what the other writer added and without
    what it removed, by id."""
    before = {e.id for e in base.entries if e.id is not None}
    kept = {e.id for e in theirs.entries if e.id is not None}
    removed = before - kept
    present = {e.id for e in now.entries if e.id is not None}
    entries = [e for e in now.entries if e.id not in removed]
    entries += [e for e in theirs.entries if e.id is not None and e.id not in before | present]
    return queue_files.QueueFile(entries, now.wrapper)
