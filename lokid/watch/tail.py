"""Following `.loki/events.jsonl`: new lines only, through rotation and truncation.

Loki Mode appends with an unlocked `>>` and rotates the file at 50 MB, so a read
may end inside a line: the partial tail waits for the rest.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import msgspec

from lokid.files.reading import problem
from lokid.wire.messages import UNDECODABLE

log = logging.getLogger("lokid.watch")

MAX_LINE = 64 * 1024  # longer lines are skipped whole
MAX_READ = 4 * 1024 * 1024  # per call; the rest waits for the next change


class Tail:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._ino: int | None = None
        self._offset = 0
        self._partial = b""
        self._skipping = False

    def start_at_end(self) -> None:
        """At startup, only what is appended from now on counts (a path lokid cannot look at
        counts as empty: `read` reports the problem when it changes)."""
        try:
            st = os.stat(self.path)
        except OSError:
            self._ino, self._offset = None, 0
            return
        self._ino, self._offset = st.st_ino, st.st_size

    def read(self) -> list[Any]:
        """The records appended since the last call (bad lines are logged and skipped)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            self._ino, self._offset, self._partial = None, 0, b""
            return []
        except OSError as exc:
            raise problem(self.path, exc) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return []  # a folder (or worse) where the log should be: nothing to read
            if st.st_ino != self._ino or st.st_size < self._offset:
                # Rotated (a new file) or truncated: read the new content from its start.
                self._ino, self._offset, self._partial = st.st_ino, 0, b""
                self._skipping = False
            data = os.pread(fd, min(MAX_READ, st.st_size - self._offset), self._offset)
        finally:
            os.close(fd)
        self._offset += len(data)
        return self._records(data)

    def _records(self, data: bytes) -> list[Any]:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            self._partial, self._skipping = b"", True
        out = []
        for line in lines:
            if self._skipping:
                self._skipping = False  # the end of an over-long line
                log.info("skipped a line over %d bytes in %s", MAX_LINE, self.path)
                continue
            if not line.strip():
                continue
            if len(line) > MAX_LINE:
                log.info("skipped a line over %d bytes in %s", MAX_LINE, self.path)
                continue
            try:
                out.append(msgspec.json.decode(line))
            except UNDECODABLE:
                log.info("skipped a line that is not JSON in %s", self.path)
        return out
