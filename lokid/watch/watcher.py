"""One watchfiles watcher for every watched project's `.loki/`, handing what changed to the
reactions.

It watches `.loki/` and the few folders in it whose files have a meaning,
each on its own: never `.loki/state/`, where lokid's database lives, since a
watch there would wake the watcher on every commit. The watcher restarts
when the set of folders changes (a project added or removed, a `.loki/` or
one of its folders created or deleted), and then catches up on what changed
while it was down (see ledger.py). It stops within one `step` on shutdown:
it is always handed a stop event, since cancelling watchfiles without one
waits up to its five-second rust timeout. A prober looks at each project
folder once a second, so a folder that disappears is marked missing instead
of breaking the watcher, and is watched again when it comes back; it also
polls the one file of `.loki/state/` that has a meaning.

What a change means for lokid is not the watcher's business: it hands
`(project, meaning, path)` to a `Reactions` object, which the composition
root implements.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Protocol

import anyio
import trio
import watchfiles

from lokid.errors import LokidError
from lokid.files.reading import exists, is_dir, problem
from lokid.projects import Project, Projects
from lokid.watch.ledger import Ledger, folder_contents
from lokid.watch.meaning import FOLDERS, POLLED, Kind, Meaning, classify

log = logging.getLogger("lokid.watch")

STATE_FILES = ("STOP", "PAUSE", "PAUSE_AT_CHECKPOINT")  # looked at when a watch begins
RESTART_COALESCE = 0.05  # seconds of quiet before the watcher restarts on a new set
PROBE_INTERVAL = 1.0  # seconds between looks at whether project folders still exist


class Reactions(Protocol):
    """What lokid does about what the watcher sees."""

    def watching(self, project: Project) -> None:
        """`project`'s `.loki/` has just come under watch (at start, or created later)."""

    async def changed(self, project: Project, meaning: Meaning, path: Path) -> None:
        """A file with a meaning appeared, changed or went away."""

    def trouble(self, project: Project, error: str | None) -> None:
        """The project's files cannot be used (None: they can again)."""

    def missing(self, project: Project) -> None:
        """The project's folder disappeared."""

    def restored(self, project: Project) -> None:
        """The project's folder is back."""


class Watcher:
    def __init__(
        self,
        projects: Projects,
        reactions: Reactions,
        stopping: Callable[[], Awaitable[None]],
        *,
        step_ms: int,
        debounce_ms: int,
    ) -> None:
        self._projects = projects
        self._reactions = reactions
        self._wait_stopping = stopping
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self._restart = trio.Event()
        self._seen: dict[str, tuple[bool, bool]] = {}  # path -> (exists, has .loki)
        self._watching: frozenset[str] = frozenset()  # the folders being watched
        self._ledger = Ledger()
        self._wanted = 0  # restarts asked for
        self._done = 0  # the last of them whose watches are in place
        self._settled = trio.Event()
        self.batches = 0
        projects.on_change.append(self.restart)

    # -- the Area protocol (run is below) ------------------------------------------------

    def reload(self) -> None:
        pass

    def idle(self) -> bool:
        return True

    def close(self) -> None:
        pass

    # -- the watcher ---------------------------------------------------------------------

    def restart(self) -> None:
        """The set of folders to watch may have changed."""
        self._wanted += 1
        self._restart.set()

    async def settled(self, project: Project | None = None) -> None:
        """Return once every change of the watched set asked for so far is under watch, and
        `project`'s `.loki/` too if it has one (`project.add` answers only then, so a
        client's next write is seen)."""
        if (
            project is not None
            and project.loki.is_dir()
            and str(project.loki) not in self._watching
        ):
            self.restart()  # created since the last look; the prober would see it within 1 s
        wanted = self._wanted
        while self._done < wanted:
            await self._settled.wait()

    def _mark_settled(self, generation: int) -> None:
        self._done = max(self._done, generation)
        self._settled.set()
        self._settled = trio.Event()

    def _targets(self) -> dict[str, Project]:
        """Each folder to watch -> its project: `.loki/`, and those of FOLDERS that exist.

        A project whose folders lokid cannot look at (no permission, a symlink loop, a path
        too long) is left out and its problem reported; every other project is watched."""
        targets: dict[str, Project] = {}
        for project in self._projects.watched():
            try:
                folders = _folders(project)
            except OSError as exc:
                self._reactions.trouble(project, str(problem(project.loki, exc).message))
                continue
            self._reactions.trouble(project, None)
            targets.update(dict.fromkeys(folders, project))
        return targets

    async def run(self) -> None:
        """The watcher and the prober, for the daemon's life."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._probe)
            await self._watch_loop()
            nursery.cancel_scope.cancel()

    async def _watch_loop(self) -> None:
        stopped = trio.Event()

        async def stop_when_stopping() -> None:
            await self._wait_stopping()
            stopped.set()
            self._restart.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_when_stopping)
            while not stopped.is_set():
                generation = self._wanted
                self._restart = trio.Event()
                targets = self._targets()
                projects = {project.path: project for project in targets.values()}
                fresh = {p for p, proj in projects.items() if str(proj.loki) not in self._watching}
                self._watching = frozenset(targets)
                self._ledger.keep(projects)
                for project in projects.values():
                    if project.path in fresh:
                        self._reactions.watching(project)
                if not targets:
                    self._mark_settled(generation)
                    await self._restart.wait()
                    continue
                await self._watch(targets, fresh, generation)
                # Projects are often added in a burst: one restart for the lot.
                await trio.sleep(RESTART_COALESCE)
            nursery.cancel_scope.cancel()

    async def _watch(self, targets: dict[str, Project], fresh: set[str], generation: int) -> None:
        stop = anyio.Event()

        def wanted(change: watchfiles.Change, path: str) -> bool:
            return self._meaning(targets, path) is not None

        async def pump() -> None:
            try:
                async for changes in watchfiles.awatch(
                    *targets,
                    watch_filter=wanted,
                    debounce=self.debounce_ms,
                    step=self.step_ms,
                    stop_event=stop,
                    recursive=False,
                    ignore_permission_denied=True,
                ):
                    self.batches += 1
                    await self._dispatch(targets, changes)
            except (OSError, RuntimeError) as exc:
                # A watched folder vanished under the watcher; the prober will restart it.
                log.info("watcher stopped: %s", exc)
                with trio.move_on_after(PROBE_INTERVAL):
                    await self._restart.wait()
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:

            async def stopper() -> None:
                await self._restart.wait()
                stop.set()  # watchfiles notices within one step

            nursery.start_soon(stopper)
            nursery.start_soon(pump)
            # watchfiles adds its inotify watches when the generator first runs, before
            # its first wait; two scheduling rounds later they are in place.
            await trio.sleep(0)
            await trio.sleep(0)
            projects = {project.path: project for project in targets.values()}
            log.info("watching %d project(s), %d folders", len(projects), len(targets))
            for path, project in projects.items():
                if path in fresh:
                    await self._look_inside(project)
                    self._ledger.baseline(path, project.loki)
                else:
                    await self._catch_up(project)
            self._mark_settled(generation)

    @staticmethod
    def _meaning(targets: dict[str, Project], path: str) -> tuple[Project, Meaning] | None:
        """The project and meaning of a changed path. The project's own path may hold a
        `.loki` part (`/x/.loki/app`): its `.loki/` is the last one that is watched."""
        end = len(path)
        while (at := path.rfind("/.loki/", 0, end)) >= 0:
            project = targets.get(path[:at] + "/.loki")
            if project is not None:
                meaning = classify(tuple(path[at + len("/.loki/") :].split("/")))
                return None if meaning is None else (project, meaning)
            end = at
        return None

    async def _dispatch(self, targets: dict[str, Project], changes: Iterable[tuple]) -> None:
        todo: dict[tuple[str, Meaning], tuple[Project, Path]] = {}
        for _change, path in sorted(changes, key=lambda c: c[1]):
            found = self._meaning(targets, path)
            if found is None:
                continue
            project, meaning = found
            if meaning.kind is Kind.FOLDER:
                self.restart()  # to watch it; then what it holds is caught up on
            else:
                todo[(project.path, meaning)] = (project, Path(path))
        for (_, meaning), (project, path) in todo.items():
            await self._react_safely(project, meaning, path)

    async def _react_safely(self, project: Project, meaning: Meaning, path: Path) -> None:
        """One project's files must never stop the watcher, let alone the daemon."""
        try:
            self._ledger.note(project.path, project.loki, path.relative_to(project.loki).parts)
            await self._reactions.changed(project, meaning, path)
        except Exception as exc:
            _report(path, exc)

    async def _look_inside(self, project: Project) -> None:
        """A folder just put under watch: what it already holds counts as having appeared,
        so a signal made just before its watch was in place is not lost."""
        found = [((name,), m) for name in STATE_FILES if (m := classify((name,))) is not None]
        found += folder_contents(project.loki / "signals")
        found += [(("queue", "pending.json"), Meaning(Kind.PENDING))]
        for parts, meaning in found:
            path = project.loki.joinpath(*parts)
            if exists(path):
                await self._react_safely(project, meaning, path)

    async def _catch_up(self, project: Project, only: Iterable[tuple[str, ...]] | None = None):
        """React to what changed while nobody watched (a restart, an unwatched folder)."""
        for parts in self._ledger.changes(project.path, project.loki, only):
            meaning = classify(parts)
            if meaning is not None:
                await self._react_safely(project, meaning, project.loki.joinpath(*parts))

    # -- the prober ----------------------------------------------------------------------

    async def _probe(self) -> None:
        while True:
            self._projects.retry_save()
            self.look()
            for project in self._projects.watched():
                await self._catch_up(project, POLLED)
            await trio.sleep(PROBE_INTERVAL)

    def look(self) -> None:
        """Notice folders that went missing or came back, and `.loki/` created or deleted."""
        for project in self._projects.watched():
            now = (project.exists(), is_dir(project.loki))
            # A project is only ever added while its folder exists.
            before = self._seen.get(project.path, (True, now[1]))
            self._seen[project.path] = now
            if before[0] != now[0]:
                project.missing = not now[0]
                if project.missing:
                    log.info("project.missing: %s", project.path)
                    self._reactions.missing(project)
                else:
                    log.info("project.restored: %s", project.path)
                    self._reactions.restored(project)
        if frozenset(self._targets()) != self._watching:
            self.restart()


def _folders(project: Project) -> list[str]:
    """`.loki/` and its folders that exist; OSError when lokid may not look."""
    try:
        if not stat.S_ISDIR(os.stat(project.loki).st_mode):
            return []
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = [str(project.loki)]
    for name in sorted(FOLDERS):
        folder = project.loki / name
        try:
            if stat.S_ISDIR(os.stat(folder).st_mode):
                found.append(str(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
    os.listdir(project.loki)  # a folder we may not read is a problem, not a silent gap
    return found


def _report(path: Path, exc: Exception) -> None:
    if isinstance(exc, LokidError):
        log.warning("reacting to %s: %s", path, exc.message)
    else:
        log.error("reacting to %s failed", path, exc_info=exc)
