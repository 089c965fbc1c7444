"""What lokid last saw of each file under `.loki/` that has a meaning.

inotify tells nothing about what changed while the watcher was restarting (a
project added, a folder created) and lokid does not watch `.loki/state/` at
all. Comparing each file's signature with the one seen last finds those
changes afterwards, as watchman's recrawl does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from lokid.files.atomic import signature_of
from lokid.watch.meaning import FILES, Meaning, inside

Signature = tuple[int, int, int] | None  # None: the file does not exist
Parts = tuple[str, ...]  # a path relative to `.loki/`, split


def signature(path: Path) -> Signature:
    try:
        return signature_of(path)
    except OSError:  # e.g. a file where a folder should be
        return None


def folder_contents(folder: Path) -> list[tuple[Parts, Meaning]]:
    """What the files now in one of `.loki/`'s folders mean."""
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return []
    return inside(folder.name, names)


def meaningful(loki: Path) -> list[Parts]:
    """Every file under `loki` that has a meaning, whether or not it exists now."""
    return [*FILES, *(parts for parts, _ in folder_contents(loki / "signals"))]


class Ledger:
    def __init__(self) -> None:
        self._seen: dict[str, dict[Parts, Signature]] = {}

    def baseline(self, project: str, loki: Path) -> None:
        """From now on, changes are counted against what is there now."""
        files = meaningful(loki)
        self._seen[project] = {parts: signature(loki.joinpath(*parts)) for parts in files}

    def note(self, project: str, loki: Path, parts: Parts) -> None:
        """lokid is reacting to this file as it is now."""
        self._seen.setdefault(project, {})[parts] = signature(loki.joinpath(*parts))

    def changes(self, project: str, loki: Path, only: Iterable[Parts] | None = None) -> list[Parts]:
        """The files (among `only`, default all) that changed since they were last seen,
        noted as seen. A project without a baseline has none yet."""
        seen = self._seen.get(project)
        if seen is None:
            return []
        candidates = set(meaningful(loki)) | set(seen) if only is None else set(only)
        changed = []
        for parts in sorted(candidates):
            now = signature(loki.joinpath(*parts))
            if now != seen.get(parts):
                seen[parts] = now
                changed.append(parts)
        return changed

    def keep(self, projects: Iterable[str]) -> None:
        """Forget the projects no longer watched."""
        wanted = set(projects)
        self._seen = {p: seen for p, seen in self._seen.items() if p in wanted}
