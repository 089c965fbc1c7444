"""Projects: the folders whose `.loki/` lokid owns.

A project is named by the absolute path the client gave, exactly as given
(Loki Mode derives container names from the logical `$PWD`, not a resolved
path), so the path must already be normal: no `.`/`..` parts, no doubled or
trailing slashes. Each area keeps its per-project state on the `Project`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lokid.errors import InvalidParams


def check_project_path(path: str) -> str:
    if not path or "\x00" in path:
        raise InvalidParams("project must be a non-empty path without NUL bytes")
    if not os.path.isabs(path):
        raise InvalidParams(f"project must be an absolute path, got {path!r}")
    if os.path.normpath(path) != path or path.startswith("//"):
        raise InvalidParams(
            f"project path must be normal (no '.', '..', doubled or trailing '/'): {path!r}"
        )
    return path


class Project:
    __slots__ = ("areas", "loki", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.loki = Path(path) / ".loki"
        # Per-area state (the queue store, the run tracker, ...), keyed by area name.
        self.areas: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return os.path.basename(self.path) or self.path


class Projects:
    def __init__(self) -> None:
        self._by_path: dict[str, Project] = {}

    def get(self, path: str) -> Project:
        """The project at `path`, known from now on (any method naming a project adds it)."""
        project = self._by_path.get(path)
        if project is None:
            project = Project(check_project_path(path))
            self._by_path[path] = project
        return project

    def known(self, path: str) -> Project | None:
        return self._by_path.get(path)

    def __iter__(self):
        return iter(list(self._by_path.values()))

    def paths(self) -> list[str]:
        return sorted(self._by_path)
