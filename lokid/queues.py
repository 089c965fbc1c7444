"""The queue area of the daemon: each project's queue, opened on first use,
with its view writer, and one sweeper that expires leases and turns due
breakers half-open for every project."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from lokid.breakers import CONFIG_PATH, BreakerConfigs, ConfigError, load_config
from lokid.errors import NotFound, Unavailable, unavailable_file
from lokid.files.views import BREAKERS, VIEW_FILES, ViewWriter
from lokid.projects import Project
from lokid.queue import Queue
from lokid.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from lokid.daemon import Daemon

log = logging.getLogger("lokid.queues")

SWEEP_MAX_SLEEP = 1.0  # the sweeper looks at least this often, whatever it was told


class QueueArea:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._queues: dict[str, Queue] = {}
        self._views: dict[str, ViewWriter] = {}
        self._poke = trio.Event()
        self._next_look = 0.0
        daemon.services.append(self._sweeper)
        daemon.reload_hooks.append(self.reload_all)
        daemon.stop_hooks.append(self.close_all)
        daemon.idle_checks.append(self.idle)

    def open(self, project: Project) -> Queue:
        queue = self._queues.get(project.path)
        if queue is not None:
            return queue
        if not Path(project.path).is_dir():
            raise NotFound(f"project folder {project.path} does not exist")
        settings = self.daemon.settings
        db_path = project.loki / "state" / "lokid.db"
        try:
            store = SqliteStore(db_path, settings.durability)
        except OSError as exc:
            raise unavailable_file(f"open {db_path}", exc) from exc
        except sqlite3.Error as exc:
            raise Unavailable(f"cannot open {db_path}: {exc}") from exc
        config = self._read_config(project, None)
        hub = self.daemon.hub

        def publish(topic: str, data: dict[str, Any]) -> None:
            hub.publish(topic, project.path, data)

        views = ViewWriter(
            project.loki,
            store.reader,
            completed_keep=settings.completed_keep,
            delay=settings.view_delay,
            import_entries=lambda entries: queue.import_tasks(entries),
            quarantined=lambda path, copy, why: self._quarantined(project, path, copy, why),
            breakers_json=lambda: breakers_file(queue),
        )
        queue = Queue(
            project.path, store, config, publish, self._changed(views), lease_set=self.lease_set
        )
        self._queues[project.path] = queue
        self._views[project.path] = views
        project.areas["queue"] = queue
        views.mark([*VIEW_FILES, BREAKERS])  # bring the files in line with the database
        self.daemon.spawn(views.run)
        self._poke.set()
        log.info("opened the queue of %s", project.path)
        return queue

    def views(self, project: Project) -> ViewWriter:
        self.open(project)
        return self._views[project.path]

    def _changed(self, views: ViewWriter):
        def changed(states) -> None:
            views.mark(set(states))

        return changed

    def lease_set(self, until: float) -> None:
        """A lease that ends before the sweeper's next look wakes it early."""
        if until < self._next_look:
            self._poke.set()

    def _quarantined(self, project: Project, path: Path, copy: Path, why: str) -> None:
        log.warning("quarantined %s as %s: %s", path, copy, why)
        self.daemon.hub.publish(
            "queue.quarantined", project.path, {"file": str(path), "copy": str(copy), "error": why}
        )

    # -- configuration -----------------------------------------------------------------

    def _read_config(self, project: Project, queue: Queue | None):
        try:
            return load_config(project.loki / CONFIG_PATH)
        except ConfigError as exc:
            log.warning("%s; keeping the previous configuration", exc)
            self.daemon.hub.publish("config.invalid", project.path, {"error": str(exc)})
            return queue.breakers.config if queue is not None else BreakerConfigs()

    def reload(self, project: Project) -> bool:
        queue = self.open(project)
        before = queue.breakers.config
        queue.breakers.config = self._read_config(project, queue)
        ok = queue.breakers.config is not before
        if ok:
            self.daemon.hub.publish("config.reloaded", project.path, {"source": str(CONFIG_PATH)})
            self._views[project.path].mark([BREAKERS])  # halfOpenAt may have moved
        return ok

    def reload_all(self) -> None:
        for path in list(self._queues):
            self.reload(self.daemon.projects.get(path))

    # -- background --------------------------------------------------------------------

    async def _sweeper(self, daemon: Daemon) -> None:
        """Expire leases and turn breakers half-open when due; reads only until then."""
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
        views = self._views.pop(project.path, None)
        project.areas.pop("queue", None)
        if views is not None:
            views.close()
            views.retire()
        if queue is not None:
            queue.store.close()
            log.info("closed the queue of %s", project.path)

    def idle(self) -> bool:
        return all(queue.idle() for queue in self._queues.values())

    def close_all(self) -> None:
        for path, queue in self._queues.items():
            self._views[path].close()
            queue.store.close()
        self._queues.clear()


def breakers_file(queue: Queue) -> bytes:
    """`.loki/state/circuit-breakers.json`, in the reference's shape."""
    listing = queue.breakers.snapshot()
    keep = ("state", "failures", "lastFailure", "openedAt", "halfOpenAt")
    body = {"circuitBreakers": {t: {k: v[k] for k in keep} for t, v in listing.items()}}
    return msgspec.json.encode(body)
