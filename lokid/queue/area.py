"""The queue area: each project's queue, opened on first use, with its view writer, and one
sweeper that expires leases and turns due breakers half-open for every project.

A project's database is `.loki/lokid/lokid.db`, in a folder of lokid's own: Loki Mode's
checkpoints snapshot and restore `.loki/state/`, and a restore copied over an open
database would corrupt it. (A database an older lokid left in `.loki/state/` is moved.)
Reading never creates anything: a project whose database does not exist yet has an empty
queue until the first write."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from lokid.errors import (
    ConfigError,
    LokidError,
    NotFound,
    QueueBusy,
    StoreUnavailable,
    unavailable_file,
)
from lokid.files import loki_run
from lokid.files.reading import exists as _exists
from lokid.files.views import BREAKERS, STATES, VIEW_FILES, ViewWriter
from lokid.lifecycle import Spawner
from lokid.projects import Project
from lokid.queue.breaker_config import CONFIG_PATH, BreakerConfigs, load_config
from lokid.queue.core import Queue
from lokid.queue.databases import Databases
from lokid.queue.loki_tasks import breakers_file
from lokid.queue.shared import is_shared
from lokid.settings import Settings
from lokid.store.base import QueueStore
from lokid.store.choice import choose
from lokid.store.sqlite import SqliteStore
from lokid.wire import events as ev

log = logging.getLogger("lokid.queues")

SWEEP_MAX_SLEEP = 1.0  # the sweeper looks at least this often, whatever it was told
FOLLOW_RETRY = 5.0  # seconds between tries to follow a shared queue whose database is away
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
        self._reconciled: set[str] = set()
        self._live: dict[str, bool] = {}  # whether a Loki Mode run is live, per project
        self._poke = trio.Event()
        self._next_look = 0.0
        self._sweep_errors: dict[str, str] = {}
        # The watched projects (app.py wires it), for `follow_shared`.
        self.watched: Callable[[], list[Project]] = list
        self._follow_again: float | None = None  # when to try following again
        self._shared = Databases(spawn)  # the PostgreSQL databases queues live in
        self._bulk_locks: dict[str, trio.Lock] = {}
        self._due: set[str] = set()  # projects whose store is due a checkpoint
        self._checkpoint_wake = trio.Event()
        # Called when a bulk enqueue lets go of a queue (the batcher runs what waited).
        self.on_free: list[Callable[[], None]] = []

    def existing(self, project: Project) -> Queue | None:
        """The project's queue if it has a database; None (and nothing created) if not.
        QueueBusy while a bulk enqueue holds it (see `open`)."""
        queue = self._usable(project)
        if queue is not None:
            return _not_busy(queue)
        if not project.exists():
            raise NotFound(f"project folder {project.path} does not exist")
        if not (
            _exists(db_path(project)) or _exists(old_db_path(project))
        ) and not self._shared_choice(project):
            return None
        return self._open(project)

    def _shared_choice(self, project: Project) -> bool:
        """The project's queue is in a PostgreSQL database (it exists whether or not this
        lokid has used it)."""
        return choose(project.loki, project.path, self._settings.store).url is not None

    def open(self, project: Project) -> Queue:
        """The project's queue, its database created if need be (for a write); QueueBusy
        while a bulk enqueue holds it (the batcher defers its requests until `on_free`)."""
        return _not_busy(self._opened(project))

    def _opened(self, project: Project) -> Queue:
        """`open` without the bulk enqueue's gate (files and memory only)."""
        queue = self._usable(project) or self._open(project)
        if project.path not in self._reconciled:
            # The first write since lokid started: bring lokid's entries in Loki Mode's
            # files in line with the database (after a crash they may be behind).
            self._reconciled.add(project.path)
            self._views[project.path].mark([*STATES, BREAKERS])
        return queue

    def _usable(self, project: Project) -> Queue | None:
        queue = self._queues.get(project.path)
        if queue is not None and queue.store.broken:
            self.forget(project)  # its file is gone: the next open starts a new database
            return None
        return queue

    def _lost(self, project: Project) -> Callable[[str], None]:
        def lost(why: str) -> None:
            log.warning("%s", why)
            self._emit(project.path, ev.QueueStoreLost(file=str(db_path(project)), error=why))

        return lost

    def _open(self, project: Project) -> Queue:
        if not Path(project.path).is_dir():
            raise NotFound(f"project folder {project.path} does not exist")
        settings = self._settings
        store, url = self._open_store(project)
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
            import_entries=lambda entries, first: queue.import_tasks(entries, first),
            quarantined=lambda path, copy, why: self._quarantined(project, path, copy, why),
            breakers_json=lambda: breakers_file(queue.breakers.snapshot()),
            run_live=lambda: loki_run.is_live(project.loki),
        )
        commits = [0]

        def changed(states: Any) -> None:
            views.mark(set(states))
            commits[0] += 1
            if commits[0] >= CHECKPOINT_EVERY:
                commits[0] = 0
                self._due.add(project.path)
                self._checkpoint_wake.set()

        queue = Queue(
            project.path,
            store,
            config,
            publish,
            changed,
            clock=getattr(store, "clock", time.time),  # a shared database's: see pg_database
            lease_set=self.lease_set,
        )
        self._queues[project.path] = queue
        self._projects[project.path] = project
        self._views[project.path] = views
        self._live[project.path] = loki_run.is_live(project.loki)
        if url is not None and is_shared(store):
            self._shared.follow(project.path, store, url, views, self._emit)
            self._reconciled.add(project.path)
            views.mark([*STATES, BREAKERS])  # others may have changed it: the files follow
        self._spawn(views.run)
        self._poke.set()
        log.info("opened the queue of %s in %s", project.path, getattr(store, "path", "?"))
        return queue

    def _open_store(self, project: Project) -> tuple[QueueStore, str | None]:
        """SQLite in the project's folder, or its queue in a PostgreSQL database
        (lokid/store/choice.py says which), with that database's URL."""
        choice = choose(project.loki, project.path, self._settings.store)
        if choice.url is not None:
            return self._shared.store(choice.url, choice.name), choice.url
        path = db_path(project)
        try:
            _move_old_database(project)
            return SqliteStore(path, self._settings.durability, self._lost(project)), None
        except OSError as exc:
            raise unavailable_file(f"open {path}", exc) from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {path}: {exc}") from exc

    def follow_shared(self) -> None:
        """Open the queue of every watched project whose queue is in a shared database, so
        its events (made through any lokid) reach this lokid's subscribers at once, not
        after its first request. Called when the watched set changes, and at start."""
        self._follow_again = None
        for project in self.watched():
            if project.path in self._queues or not project.exists():
                continue
            try:
                if choose(project.loki, project.path, self._settings.store).url is not None:
                    self.open(project)
            except StoreUnavailable as exc:  # the database is away: try again later
                log.warning("cannot follow the queue of %s yet: %s", project.path, exc.message)
                self._follow_again = time.monotonic() + FOLLOW_RETRY
            except LokidError as exc:  # a bad queue-store.yaml: said when the file is used
                log.warning("cannot follow the queue of %s: %s", project.path, exc.message)

    @asynccontextmanager
    async def bulk(self, project: Project) -> AsyncIterator[Queue]:
        """Hold the project's queue alone across awaits (a bulk enqueue's transaction):
        others wait for the gate, and requests meanwhile get QueueBusy (batched ones wait
        in the batcher until it is free)."""
        lock = self._bulk_locks.setdefault(project.path, trio.Lock())
        async with lock:
            queue = self._opened(project)
            queue.bulk = True
            try:
                yield queue
            finally:
                queue.bulk = False
                for callback in self.on_free:
                    callback()

    def views(self, project: Project) -> ViewWriter:
        self._opened(project)  # (files only: a bulk enqueue's gate does not apply)
        return self._views[project.path]

    def is_own_write(self, project: Project, path: Path) -> bool:
        views = self._views.get(project.path)
        return views is not None and views.is_own_write(path)

    def restore_views(self, project: Project, name: str) -> None:
        """Someone else wrote a queue file (or a Loki Mode run started or ended): merge
        lokid's entries back in. Nothing to do for a project with no queue of lokid's."""
        if self.existing(project) is not None:
            self._views[project.path].mark([VIEW_FILES[name]])

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
        queue = self._opened(project)  # (memory only: a bulk enqueue's gate does not apply)
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
        self.follow_shared()
        while True:
            self._next_look = time.time() + SWEEP_MAX_SLEEP
            if self._follow_again is not None and time.monotonic() >= self._follow_again:
                self.follow_shared()
            self._shared.refresh_clocks()
            for queue in list(self._queues.values()):
                try:
                    self._sweep(queue)
                except LokidError as exc:  # a shared database away: said once per outage
                    if self._sweep_errors.get(queue.project) != exc.message:
                        log.warning("sweeping %s: %s", queue.project, exc.message)
                    self._sweep_errors[queue.project] = exc.message
                except Exception:
                    log.exception("sweeping %s failed", queue.project)
                else:
                    self._sweep_errors.pop(queue.project, None)
            self._look_for_runs()
            with trio.move_on_after(max(0.0, self._next_look - time.time()) + 0.001):
                await self._poke.wait()
            self._poke = trio.Event()

    def _look_for_runs(self) -> None:
        """A Loki Mode run that started or ended (its pid, not only its files) moves lokid's
        in-progress entries out of in-progress.json or back in (see files/views.py)."""
        for path, project in list(self._projects.items()):
            live = loki_run.is_live(project.loki)
            if self._live.get(path, live) != live:
                self._live[path] = live
                self._views[path].mark(["in-progress"])

    def _sweep(self, queue: Queue) -> None:
        """On the queue's clock (a shared database's time), waking on this host's."""
        if queue.bulk:  # its transaction is a bulk enqueue's until it commits
            self._next_look = min(self._next_look, time.time() + 0.05)
            return
        now = queue.clock()
        skew = time.time() - now
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
            if when is not None:  # (one still due is another instance's, being expired now)
                self._next_look = min(self._next_look, max(when + skew, time.time() + 0.01))

    def forget(self, project: Project) -> None:
        """The project's folder went away: close its queue (the next use reopens it)."""
        queue = self._queues.pop(project.path, None)
        self._projects.pop(project.path, None)
        self._reconciled.discard(project.path)
        views = self._views.pop(project.path, None)
        if views is not None:
            views.close()
            views.retire()
        self._shared.unfollow(project.path)
        if queue is not None:
            queue.store.close()
            log.info("closed the queue of %s", project.path)

    def idle(self) -> bool:
        return all(queue.idle() for queue in self._queues.values())

    def close(self) -> None:
        """Write the views still behind (a clean stop leaves them equal to the database),
        then close every database."""
        for path, queue in self._queues.items():
            views = self._views[path]
            try:
                views.flush_now()
            except Exception:
                log.exception("could not bring the views of %s up to date", path)
            views.close()
            queue.store.close()
        self._queues.clear()
        self._projects.clear()
        self._shared.close()


def _not_busy(queue: Queue) -> Queue:
    if queue.bulk:
        raise QueueBusy(
            f"the queue of {queue.project} is taking a bulk enqueue; try again shortly",
            queue=queue,
        )
    return queue


def db_path(project: Project) -> Path:
    return project.loki / "lokid" / "lokid.db"


def old_db_path(project: Project) -> Path:
    """Where lokid before 0.2 kept it: `.loki/state/`, which Loki Mode's checkpoints own."""
    return project.loki / "state" / "lokid.db"


def _move_old_database(project: Project) -> None:
    """Move a database an older lokid left in `.loki/state/` to `.loki/lokid/`, whole: its
    WAL is checkpointed into it first, so one rename carries everything."""
    old, new = old_db_path(project), db_path(project)
    if not _exists(old) or _exists(new):
        return
    store = SqliteStore(old)  # takes the exclusive lock: no other lokid has it open
    try:
        store.fold_wal()
    finally:
        store.close()
    new.parent.mkdir(parents=True, exist_ok=True)
    os.replace(old, new)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{old}{suffix}")
    log.info("moved %s to %s (Loki Mode's checkpoints restore .loki/state/)", old, new)
