"""The queue area: each project's queue, opened on first use, with its view writer, and one
sweeper that expires leases and turns due breakers half-open for every project."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from lokid.errors import ConfigError, NotFound, QueueBusy, StoreUnavailable, unavailable_file
from lokid.files.views import BREAKERS, VIEW_FILES, ViewWriter
from lokid.lifecycle import Spawner
from lokid.projects import Project
from lokid.queue.breaker_config import CONFIG_PATH, BreakerConfigs, load_config
from lokid.queue.core import Queue
from lokid.queue.loki_tasks import breakers_file
from lokid.settings import Settings
from lokid.store.sqlite import SqliteStore
from lokid.wire import events as ev

log = logging.getLogger("lokid.queues")

SWEEP_MAX_SLEEP = 1.0  # the sweeper looks at least this often, whatever it was told
# Commits of one project between two checkpoints of its store (off the event loop): at a
# few pages a commit, some 10-20 MiB of WAL, in which the hot pages are copied back once.
CHECKPOINT_EVERY = 1024

Emit = Callable[[str | None, Any], None]


class QueueArea:
    def __init__(self, settings: Settings, emit: Emit, spawn: Spawner) -> None:
        self._settings = settings
        self._emit = emit
        self._spawn = spawn
        self._queues: dict[str, Queue] = {}
        self._projects: dict[str, Project] = {}
        self._views: dict[str, ViewWriter] = {}
        self._poke = trio.Event()
        self._next_look = 0.0
        self._bulk_locks: dict[str, trio.Lock] = {}
        self._due: set[str] = set()  # projects whose store is due a checkpoint
        self._checkpoint_wake = trio.Event()
        # Called when a bulk enqueue lets go of a queue (the batcher runs what waited).
        self.on_free: list[Callable[[], None]] = []

    def open(self, project: Project) -> Queue:
        """The project's queue, opened on first use; QueueBusy while a bulk enqueue holds it
        (the batcher defers its requests until `on_free` says so)."""
        queue = self._open(project)
        if queue.bulk:
            raise QueueBusy(
                f"the queue of {project.path} is taking a bulk enqueue; try again shortly",
                queue=queue,
            )
        return queue

    def _open(self, project: Project) -> Queue:
        queue = self._queues.get(project.path)
        if queue is not None:
            return queue
        if not Path(project.path).is_dir():
            raise NotFound(f"project folder {project.path} does not exist")
        settings = self._settings
        db_path = project.loki / "state" / "lokid.db"
        try:
            store = SqliteStore(db_path, settings.durability)
        except OSError as exc:
            raise unavailable_file(f"open {db_path}", exc) from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {db_path}: {exc}") from exc
        config = self._load_config(project)
        if isinstance(config, str):
            config = BreakerConfigs()
        emit = self._emit

        def publish(event: Any) -> None:
            emit(project.path, event)

        views = ViewWriter(
            project.loki,
            store.view_reader,
            completed_keep=settings.completed_keep,
            delay=settings.view_delay,
            import_entries=lambda entries: queue.import_tasks(entries),
            quarantined=lambda path, copy, why: self._quarantined(project, path, copy, why),
            breakers_json=lambda: breakers_file(queue.breakers.snapshot()),
        )
        commits = [0]

        def changed(states: Any) -> None:
            views.mark(set(states))
            commits[0] += 1
            if commits[0] >= CHECKPOINT_EVERY:
                commits[0] = 0
                self._due.add(project.path)
                self._checkpoint_wake.set()

        queue = Queue(project.path, store, config, publish, changed, lease_set=self.lease_set)
        self._queues[project.path] = queue
        self._projects[project.path] = project
        self._views[project.path] = views
        views.mark([*VIEW_FILES, BREAKERS])  # bring the files in line with the database
        self._spawn(views.run)
        self._poke.set()
        log.info("opened the queue of %s", project.path)
        return queue

    @asynccontextmanager
    async def bulk(self, project: Project) -> AsyncIterator[Queue]:
        """Hold the project's queue alone across awaits (a bulk enqueue's transaction):
        others wait for the gate, and requests meanwhile get QueueBusy (batched ones wait
        in the batcher until it is free)."""
        lock = self._bulk_locks.setdefault(project.path, trio.Lock())
        async with lock:
            queue = self._open(project)
            queue.bulk = True
            try:
                yield queue
            finally:
                queue.bulk = False
                for callback in self.on_free:
                    callback()

    def views(self, project: Project) -> ViewWriter:
        self._open(project)  # (files only: a bulk enqueue's gate does not apply)
        return self._views[project.path]

    def lease_set(self, until: float) -> None:
        """A lease that ends before the sweeper's next look wakes it early."""
        if until < self._next_look:
            self._poke.set()

    def _quarantined(self, project: Project, path: Path, copy: Path, why: str) -> None:
        log.warning("quarantined %s as %s: %s", path, copy, why)
        self._emit(project.path, ev.QueueQuarantined(file=str(path), copy=str(copy), error=why))

    # -- configuration -----------------------------------------------------------------

    def _load_config(self, project: Project) -> BreakerConfigs | str:
        """The breakers' file as configuration, or why it was refused (`config.invalid`)."""
        try:
            return load_config(project.loki / CONFIG_PATH)
        except ConfigError as exc:
            log.warning("%s; keeping the previous configuration", exc.message)
            self._emit(project.path, ev.ConfigInvalid(error=exc.message))
            return exc.message

    def reload_project(self, project: Project) -> str | None:
        """Re-read the breakers' file; None when it was taken, else why it was refused."""
        queue = self._open(project)  # (memory only: a bulk enqueue's gate does not apply)
        config = self._load_config(project)
        if isinstance(config, str):
            return config
        queue.breakers.config = config
        self._emit(project.path, ev.ConfigReloaded(source=str(CONFIG_PATH)))
        self._views[project.path].mark([BREAKERS])  # halfOpenAt may have moved
        return None

    # -- the Area protocol -------------------------------------------------------------

    def reload(self) -> None:
        for project in list(self._projects.values()):
            self.reload_project(project)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._checkpoints)
            await self._sweeper()

    async def _checkpoints(self) -> None:
        """Each store's checkpoint in a worker thread once it is due: never on the loop."""
        while True:
            await self._checkpoint_wake.wait()
            self._checkpoint_wake = trio.Event()
            due, self._due = self._due, set()
            for path in due:
                queue = self._queues.get(path)
                if queue is None:
                    continue
                try:
                    await trio.to_thread.run_sync(queue.store.checkpoint)
                except Exception as exc:  # the backstop checkpoint still runs at commit
                    log.warning("checkpoint of %s failed: %s", path, exc)

    async def _sweeper(self) -> None:
        """The sweeper: expire leases and turn breakers half-open when due; reads only until
        then."""
        while True:
            now = time.time()
            self._next_look = now + SWEEP_MAX_SLEEP
            for queue in list(self._queues.values()):
                try:
                    self._sweep(queue, now)
                except Exception:
                    log.exception("sweeping %s failed", queue.project)
            with trio.move_on_after(max(0.0, self._next_look - time.time()) + 0.001):
                await self._poke.wait()
            self._poke = trio.Event()

    def _sweep(self, queue: Queue, now: float) -> None:
        if queue.bulk:  # its transaction is a bulk enqueue's until it commits
            self._next_look = min(self._next_look, now + 0.05)
            return
        lease = queue.next_lease_deadline()
        if lease is not None and lease <= now:
            queue.expire_leases()
            lease = queue.next_lease_deadline()
        half_open = queue.breakers.next_half_open()
        if half_open is not None and half_open <= now:
            with queue.transaction():
                queue.breakers.tick(now)
            half_open = queue.breakers.next_half_open()
        for when in (lease, half_open):
            if when is not None:
                self._next_look = min(self._next_look, when)

    def forget(self, project: Project) -> None:
        """The project's folder went away: close its queue (the next use reopens it)."""
        queue = self._queues.pop(project.path, None)
        self._projects.pop(project.path, None)
        views = self._views.pop(project.path, None)
        if views is not None:
            views.close()
            views.retire()
        if queue is not None:
            queue.store.close()
            log.info("closed the queue of %s", project.path)

    def idle(self) -> bool:
        return all(queue.idle() for queue in self._queues.values())

    def close(self) -> None:
        for path, queue in self._queues.items():
            self._views[path].close()
            queue.store.close()
        self._queues.clear()
        self._projects.clear()
