"""Projects: the folders whose `.loki/` lokid owns.

A project is named by the absolute path the client gave, exactly as given
(Loki Mode derives container names from the logical `$PWD`, not a resolved
path), so the path must already be normal: no `.`/`..` parts, no doubled or
trailing slashes. Areas keep their own per-project state, keyed by the path.

The set of watched projects is saved in lokid's state folder and restored at
start, so a restart watches what was watched before.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from lokid.errors import InvalidParams, NotFound
from lokid.files.atomic import write_atomic
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
    __slots__ = ("loki", "missing", "path", "recent", "watched")

    def __init__(self, path: str) -> None:
        self.path = path
        self.loki = Path(path) / ".loki"
        self.watched = False
        self.missing = False
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)

    @property
    def name(self) -> str:
        return os.path.basename(self.path) or self.path

    def exists(self) -> bool:
        return os.path.isdir(self.path)


class SavedProjects(msgspec.Struct):
    version: int = 1
    projects: list[str] = msgspec.field(default_factory=list)


class Projects:
    def __init__(self, state_file: Path | None = None) -> None:
        self._by_path: dict[str, Project] = {}
        self._state_file = state_file
        self.on_change: list[Callable[[], None]] = []

    # -- the saved set -------------------------------------------------------------------

    def restore(self) -> None:
        """Watch again what was watched when lokid last ran."""
        if self._state_file is None:
            return
        try:
            saved = msgspec.json.decode(self._state_file.read_bytes(), type=SavedProjects)
        except FileNotFoundError:
            return
        except (OSError, *UNDECODABLE) as exc:
            log.warning("ignoring unreadable %s: %s", self._state_file, exc)
            return
        for path in saved.projects:
            try:
                project = self._entry(check_project_path(path))
            except InvalidParams:
                log.warning("ignoring bad saved project path %r", path)
                continue
            project.watched = True
        self._changed(save=False)

    def _save(self) -> None:
        if self._state_file is None:
            return
        saved = SavedProjects(projects=sorted(p.path for p in self if p.watched))
        try:
            write_atomic(self._state_file, msgspec.json.encode(saved), fsync=False)
        except OSError as exc:
            log.warning("could not save the watched projects to %s: %s", self._state_file, exc)

    def _changed(self, save: bool = True) -> None:
        if save:
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
            self._changed()
        return project

    def add(self, path: str) -> Project:
        project = self._entry(check_project_path(path))
        if not project.exists():
            raise NotFound(f"project folder {path} does not exist")
        if not project.watched:
            project.watched = True
            self._changed()
        return project

    def remove(self, path: str) -> bool:
        project = self._by_path.get(check_project_path(path))
        if project is None or not project.watched:
            return False
        project.watched = False
        self._changed()
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
