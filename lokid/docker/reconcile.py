"""Following the engine: container exits, and what changed while lokid was not looking.

The engine's event stream tells lokid when a container exits by itself. When the stream
breaks (engine stopped) lokid polls until it is back, then reconciles before following
events again: running managed containers are adopted, run.json files of gone ones removed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import docker
import trio

from lokid.docker import records
from lokid.docker.engine import Engine
from lokid.docker.runs import Runs
from lokid.domain import containers as rules
from lokid.errors import LokidError, Unavailable, guarded
from lokid.files import registry
from lokid.projects import Projects
from lokid.wire import events as ev
from lokid.wire.times import parse_iso

log = logging.getLogger("lokid.runs")

RETRY_MIN, RETRY_MAX = 0.2, 2.0  # seconds between attempts to reach a stopped engine
FRESH_RUN_FILE = 5.0  # seconds a shell-written run.json may wait for its container

Emit = Callable[[str | None, Any], None]


class Reconciler:
    def __init__(self, engine: Engine, runs: Runs, projects: Projects, emit: Emit) -> None:
        self.engine = engine
        self.runs = runs
        self.projects = projects
        self._emit = emit

    async def follow_engine(self) -> None:
        """For the daemon's life: follow container exits; while the engine is away, retry,
        then reconcile."""
        delay, reported = RETRY_MIN, False
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    await self._follow_events(nursery)
                except Unavailable as exc:
                    # Once per outage at info: a machine without Docker is not an error.
                    level = logging.DEBUG if reported else logging.INFO
                    log.log(level, "%s; retrying every %gs at most", exc.message, RETRY_MAX)
                    reported = True
                except Exception:
                    log.exception("the docker event watch failed; retrying")
                if self.engine.up:
                    delay, reported = RETRY_MIN, False
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _follow_events(self, nursery: trio.Nursery) -> None:
        """Open the event stream first, then reconcile, so no exit falls between the two."""
        filters = {
            "type": "container",
            "event": ["die"],
            "label": f"{rules.MANAGED_LABEL}={rules.MANAGED_VALUE}",
        }

        def open_events(client: docker.DockerClient) -> Any:
            stream = client.events(decode=True, filters=filters)
            trio.from_thread.run_sync(nursery.start_soon, guarded, "reconcile", self.reconcile)
            return stream

        async def on_event(event: dict[str, Any]) -> None:
            nursery.start_soon(guarded, "a container exit", self._on_die, event)

        await self.engine.stream(open_events, on_event, "docker events")
        raise Unavailable(f"the event stream of {self.engine.endpoint.host} ended")

    async def _on_die(self, event: dict[str, Any]) -> None:
        actor = event.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        path = attrs.get(rules.PROJECT_LABEL)
        try:
            project = self.projects.use(path) if path else None
        except LokidError:
            project = None
        if project is None:
            return
        tracker = self.runs.tracker(project)
        container_id = actor.get("ID") or event.get("id")
        name = attrs.get("name") or tracker.container
        async with tracker.lock:
            if tracker.id is not None and tracker.id != container_id:
                return  # an older container of the project
            if tracker.id is None:
                # Stopped by lokid (which forgets the run itself), or died before the
                # reconcile adopted it: then run.json still names it.
                run = await trio.to_thread.run_sync(registry.read_run_file, project.path)
                if run is None or run.container != name:
                    return
            tracker.clear()
            code = int(attrs.get("exitCode", -1))
            await self.runs.forget_run(project.path, name)
        self._emit(project.path, ev.RunExited(container=name, exit_code=code))
        log.info("%s of %s exited with %d", name, project.path, code)

    async def reconcile(self) -> None:
        """Adopt running managed containers; clean after runs that ended while unseen."""

        def survey(client: docker.DockerClient) -> list[dict[str, Any]]:
            label = f"{rules.MANAGED_LABEL}={rules.MANAGED_VALUE}"
            raws = client.api.containers(all=True, filters={"label": label})
            return [a for r in raws if (a := records.inspect(client, r["Id"])) is not None]

        managed = await self.engine.call(survey, "list containers")
        running: set[str] = set()
        for attrs in managed:
            path = records.project_of(attrs)
            if not path or not (attrs.get("State") or {}).get("Running"):
                continue
            running.add(path)
            await self._adopt(path, attrs)
        candidates = {p for a in managed if (p := records.project_of(a))}
        candidates |= {p.path for p in self.projects}
        entries = await trio.to_thread.run_sync(registry.registry_entries)
        candidates |= {e["path"] for e in entries if e.get("status") == "running" and e.get("path")}
        async with trio.open_nursery() as nursery:
            for path in candidates - running:
                nursery.start_soon(guarded, f"cleaning after {path}", self._clean_gone, path)

    async def _adopt(self, path: str, attrs: dict[str, Any]) -> None:
        try:
            project = self.projects.use(path)
        except LokidError:
            return
        tracker = self.runs.tracker(project)
        async with tracker.lock:
            if tracker.id == attrs["Id"]:
                return
            # It may have died since the survey, its exit handled already: look again.
            now = await self.engine.call(lambda c: records.inspect(c, attrs["Id"]), "inspect")
            if now is None or not now["State"].get("Running"):
                return
            tracker.id, tracker.container = attrs["Id"], attrs["Name"].lstrip("/")
        log.info("adopted %s of %s", tracker.container, path)
        self._emit(path, ev.RunAdopted(container=tracker.container, id=attrs["Id"]))

    async def _clean_gone(self, path: str) -> None:
        run = await trio.to_thread.run_sync(registry.read_run_file, path)
        if run is not None and (wait := _young(run.started_at, time.time())):
            await trio.sleep(wait)
            run = await trio.to_thread.run_sync(registry.read_run_file, path)
        if run is None:
            return
        attrs = await self.engine.call(lambda c: records.inspect(c, run.container), "inspect")
        if attrs is not None and (attrs.get("State") or {}).get("Running"):
            return
        self.runs.tracker(path).clear()
        await self.runs.forget_run(path, run.container)
        log.info("run.json of %s named %s, which is gone; removed", path, run.container)


def _young(started_at: str, now: float) -> float:
    """Seconds until a run.json counts as settled. Loki Mode's shell writes it just before
    its `docker run`, so a young file whose container is not up yet may be about to start."""
    try:
        return max(0.0, FRESH_RUN_FILE - (now - parse_iso(started_at)))
    except ValueError:
        return 0.0
