"""Projects: the folders whose `.loki/` lokid owns.

A project is named by the absolute path the client gave, exactly as given
(Loki Mode derives container names from the logical `$PWD`, not a resolved
path), so the path must already be normal: no `.`/`..` parts, no doubled or
trailing slashes. Areas keep their own per-project state, keyed by the path.

The set of watched projects is saved in lokid's state folder and restored at
start, so a restart watches what was watched before. Two daemons may share that folder
(one per socket): each saves only its own changes, merged into the file under a lock, and
a save that fails is tried again (`retry_save`) until it lands.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from lokid.errors import InvalidParams, NotFound
from lokid.files.atomic import write_atomic
from lokid.files.reading import STATE_FILE_MAX, FileProblem, read_file
from lokid.wire.messages import UNDECODABLE

log = logging.getLogger("lokid.projects")

RECENT_EVENTS = 20  # per project, for `project.status`
NAME_MAX, PATH_MAX = 255, 4095  # bytes; longer names fail every file operation


def check_project_path(path: str) -> str:
    if not path or "\x00" in path:
        raise InvalidParams("project must be a non-empty path without NUL bytes")
    if not os.path.isabs(path):
        raise InvalidParams(f"project must be an absolute path, got {path!r}")
    if os.path.normpath(path) != path or path.startswith("//"):
        raise InvalidParams(
            f"project path must be normal (no '.', '..', doubled or trailing '/'): {path!r}"
        )
    encoded = os.fsencode(path)
    if len(encoded) > PATH_MAX or any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        raise InvalidParams(
            f"project path is too long (at most {NAME_MAX} bytes a name, {PATH_MAX} in all)"
        )
    return path


class Project:
    __slots__ = ("loki", "missing", "path", "problem", "recent", "watched")

    def __init__(self, path: str) -> None:
        self.path = path
        self.loki = Path(path) / ".loki"
        self.watched = False
        self.missing = False
        # Why lokid cannot use the project's files now (permissions, a symlink loop, ...).
        self.problem: str | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)

    @property
    def name(self) -> str:
        return os.path.basename(self.path) or self.path

    def exists(self) -> bool:
        try:
            return os.path.isdir(self.path)
        except (OSError, ValueError):
            return False


class SavedProjects(msgspec.Struct):
    version: int = 1
    projects: list[str] = msgspec.field(default_factory=list)


class Projects:
    def __init__(self, state_file: Path | None = None) -> None:
        self._by_path: dict[str, Project] = {}
        self._state_file = state_file
        self.on_change: list[Callable[[], None]] = []
        # This daemon's changes not yet in the file: path -> watched (True) or not.
        self._unsaved: dict[str, bool] = {}

    # -- the saved set -------------------------------------------------------------------

    def restore(self) -> None:
        """Watch again what was watched when lokid last ran."""
        if self._state_file is None:
            return
        for path in _read_saved(self._state_file):
            try:
                project = self._entry(check_project_path(path))
            except InvalidParams:
                log.warning("ignoring bad saved project path %r", path)
                continue
            project.watched = True
        self._changed()

    def _save(self) -> None:
        """Merge this daemon's changes into the file, under its lock (another lokid sharing
        the state folder may have saved its own since)."""
        if self._state_file is None or not self._unsaved:
            return
        try:
            with _file_lock(self._state_file.with_name(self._state_file.name + ".lock")):
                paths = set(_read_saved(self._state_file))
                for path, watched in self._unsaved.items():
                    (paths.add if watched else paths.discard)(path)
                saved = SavedProjects(projects=sorted(paths))
                write_atomic(self._state_file, msgspec.json.encode(saved), fsync=False)
        except (OSError, BlockingIOError) as exc:
            log.warning(
                "could not save the watched projects to %s: %s; will try again",
                self._state_file,
                exc,
            )
            return
        self._unsaved.clear()

    def retry_save(self) -> None:
        """Save what a failed save left behind (called now and then)."""
        self._save()

    def _changed(self, project: Project | None = None) -> None:
        if project is not None:
            self._unsaved[project.path] = project.watched
            self._save()
        for callback in self.on_change:
            callback()

    # -- lookups -------------------------------------------------------------------------

    def _entry(self, path: str) -> Project:
        """The project at `path`, made known (not watched) if it was not."""
        project = self._by_path.get(path)
        if project is None:
            project = self._by_path[path] = Project(path)
        return project

    def use(self, path: str) -> Project:
        """The project a request names. Naming an existing folder adds it to the watched set
        (and saves the set), as PROTOCOL.md 6.2 says."""
        project = self._by_path.get(path)
        if project is not None and project.watched:
            return project  # the hot path: its path was checked when it became known
        project = self._entry(check_project_path(path))
        if not project.watched and project.exists():
            project.watched = True
            self._changed(project)
        return project

    def peek(self, path: str) -> Project:
        """The project a read names: known from then on (`daemon.status` lists it), never
        added to the watched set by that alone (a read changes nothing, the set included)."""
        project = self._by_path.get(path)
        return project if project is not None else self._entry(check_project_path(path))

    def add(self, path: str) -> Project:
        project = self._entry(check_project_path(path))
        if not project.exists():
            raise NotFound(f"project folder {path} does not exist")
        if not project.watched:
            project.watched = True
            self._changed(project)
        return project

    def remove(self, path: str) -> bool:
        project = self._by_path.get(check_project_path(path))
        if project is None or not project.watched:
            return False
        project.watched = False
        self._changed(project)
        return True

    def find(self, path: str) -> Project | None:
        """The project at `path` if lokid knows it; no side effects."""
        return self._by_path.get(path)

    def __iter__(self) -> Iterator[Project]:
        return iter(list(self._by_path.values()))

    def watched(self) -> list[Project]:
        return [p for p in self if p.watched]

    def paths(self) -> list[str]:
        return sorted(self._by_path)


def _read_saved(path: Path) -> list[str]:
    try:
        data = read_file(path, STATE_FILE_MAX)
        return [] if data is None else msgspec.json.decode(data, type=SavedProjects).projects
    except (FileProblem, *UNDECODABLE) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return []


@contextlib.contextmanager
def _file_lock(path: Path, wait: float = 0.2) -> Iterator[None]:
    """A short flock: the trio thread waits at most `wait` seconds, then gives up (the save
    is tried again later)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)
