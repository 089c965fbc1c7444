"""A project's Loki Mode run in a container: start, stop, status, list and logs.

lokid is the one owner of a project's run, so the shell's failure modes go away: a stop finds
the container by run.json, the recomputed name or the labels (never "No active session"
while it runs); the registry is written under Loki Mode's lock. One trio lock per project
(its `Tracker`) orders start, stop and the exit handling of its run.

The container's own dashboard is always off and no port is published (the plan's LOCK 3): a
dashboard inside sees only its own project. Loki Mode's dashboard on the host lists the run
instead, from the registry entry and `.loki/session.json` written here; the clients start
that dashboard (`loki dashboard start`), where the user's PATH, terminal and browser are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import docker
import docker.errors
import docker.types
import trio

from lokid.docker import records
from lokid.docker.config import FIXED_ENV, RunConfig
from lokid.docker.engine import Engine
from lokid.docker.images import Images
from lokid.domain import containers as rules
from lokid.errors import Conflict, LokidError, NotFound, guarded
from lokid.files import registry
from lokid.projects import Project, Projects
from lokid.secret_env import SECRET_VARS
from lokid.wire import events as ev
from lokid.wire.runs import RunInfo, RunStartParams, RunStartResult, RunStopResult
from lokid.wire.times import iso

log = logging.getLogger("lokid.runs")

Emit = Callable[[str | None, Any], None]
# Delivers one followed log line (None: the stream ended) to the asking client.
Deliver = Callable[[str, str | None], Awaitable[None]]


class Tracker:
    """Per-project run state lokid keeps between requests."""

    __slots__ = ("container", "id", "lock")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.id: str | None = None  # the container lokid started or adopted, while it runs
        self.container: str | None = None

    def clear(self) -> None:
        self.id = self.container = None


class Runs:
    def __init__(
        self,
        config: RunConfig,
        engine: Engine,
        images: Images,
        projects: Projects,
        emit: Emit,
    ) -> None:
        self.config = config
        self.engine = engine
        self.images = images
        self.projects = projects
        self._emit = emit
        self._trackers: dict[str, Tracker] = {}

    # -- helpers ------------------------------------------------------------------------

    def tracker(self, project: Project | str) -> Tracker:
        path = project if isinstance(project, str) else project.path
        tracker = self._trackers.get(path)
        if tracker is None:
            tracker = self._trackers[path] = Tracker()
        return tracker

    async def _files(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args)

    def _belongs(self, attrs: dict[str, Any], path: str) -> bool:
        """A container is project X's only by its name, its label or its workspace mount."""
        return (
            attrs["Name"].lstrip("/") == rules.container_name(path)
            or records.project_of(attrs) == path
        )

    def _find(self, client: docker.DockerClient, path: str) -> list[dict[str, Any]]:
        """The project's containers: run.json's, else the recomputed name's, else by label."""
        found: dict[str, dict[str, Any]] = {}
        run = registry.read_run_file(path)
        for ref in (run.container if run else None, rules.container_name(path)):
            attrs = records.inspect(client, ref) if ref else None
            if attrs is not None and self._belongs(attrs, path):
                found[attrs["Id"]] = attrs
        label = f"{rules.PROJECT_LABEL}={path}"
        for raw in client.api.containers(all=True, filters={"label": label}):
            if raw["Id"] not in found:
                attrs = records.inspect(client, raw["Id"])
                if attrs is not None:
                    found[attrs["Id"]] = attrs
        return list(found.values())

    # -- start ------------------------------------------------------------------------------

    async def start(self, project: Project, params: RunStartParams) -> RunStartResult:
        path = project.path
        tracker = self.tracker(project)
        ref = rules.with_default_tag(params.image or self.config.image)
        warnings: list[str] = []
        if not await trio.to_thread.run_sync(os.path.isdir, path):
            raise NotFound(f"project folder {path} does not exist")
        async with tracker.lock:
            await self._check_not_running(path)
            self._deprecations(path, params, warnings)
            async with self.images.lock:
                pulled = await self._ensure_image(ref, path, params, warnings)
                await self._check_not_running(path)
                # Once the engine is asked to create it, the container must be recorded
                # (run.json, registry, tracker) even if the client goes away meanwhile.
                with trio.CancelScope(shield=True):
                    attrs = await self._create(path, ref, params)
                    return await self._record_start(project, tracker, attrs, ref, pulled, warnings)

    def _deprecations(self, path: str, params: RunStartParams, warnings: list[str]) -> None:
        """`api` and a LOKI_DASHBOARD in `env` would turn the container's own dashboard on:
        old clients still send them, so they are ignored with a warning, not refused."""
        said: list[str] = []
        if params.api:
            said.append("api is deprecated and ignored")
        if params.env.get("LOKI_DASHBOARD", "false") != "false":
            said.append("LOKI_DASHBOARD in env is ignored")
        for message in said:
            message += (
                ": the container's dashboard stays off and no port is published;"
                " Loki Mode's dashboard on the host lists this run (loki dashboard start)"
            )
            log.warning("%s (%s)", message, path)
            warnings.append(message)
            self._emit(path, ev.RunWarning(message=message))

    async def _ensure_image(
        self, ref: str, path: str, params: RunStartParams, warnings: list[str]
    ) -> bool:
        """Pull and prune unless pulling is off; True when a pull succeeded."""
        if rules.pull_enabled(self.config.pull, params.pull):
            return await self.images.pull_for_start(ref, path, warnings)
        if not await self.engine.call(lambda c: records.image_present(c, ref)):
            raise NotFound(f"image {ref} is not present locally and pulling is off")
        return False

    async def _check_not_running(self, path: str) -> None:
        for attrs in await self.engine.call(lambda c: self._find(c, path), "find run"):
            if (attrs.get("State") or {}).get("Running"):
                name = attrs["Name"].lstrip("/")
                raise Conflict(
                    f"a run is already up for {path}: container {name}", {"container": name}
                )

    def _environment(self, params: RunStartParams) -> dict[str, str]:
        env = {**FIXED_ENV}
        env.update({k: v for k, v in self.config.secrets.items()})
        env.update(params.env)
        env["LOKI_DASHBOARD"] = "false"  # always: the host's dashboard lists the run
        return env

    async def _create(self, path: str, ref: str, params: RunStartParams) -> dict[str, Any]:
        name = rules.container_name(path)
        env = self._environment(params)
        secrets = [v for k, v in env.items() if k in SECRET_VARS and v]

        def create(client: docker.DockerClient) -> dict[str, Any]:
            stale = records.inspect(client, name)
            if stale is not None and not stale["State"].get("Running"):
                client.api.remove_container(stale["Id"], force=True)
            host_config = client.api.create_host_config(
                mounts=[docker.types.Mount(records.WORKSPACE, path, type="bind", read_only=False)],
            )
            created = client.api.create_container(
                ref,
                command=list(params.args),
                name=name,
                labels=rules.managed_labels(path),
                environment=env,
                working_dir=records.WORKSPACE,
                host_config=host_config,
                detach=True,
            )
            try:
                client.api.start(created["Id"])
            except docker.errors.APIError:
                client.api.remove_container(created["Id"], force=True)
                raise
            return client.api.inspect_container(created["Id"])

        self.engine.secrets = list({*self.engine.secrets, *secrets})
        return await self.engine.call(create, f"start {name}")

    async def _record_start(
        self,
        project: Project,
        tracker: Tracker,
        attrs: dict[str, Any],
        ref: str,
        pulled: bool,
        warnings: list[str],
    ) -> RunStartResult:
        info = records.info(attrs)
        started_at = info.started_at or iso(time.time())
        tracker.id, tracker.container = info.id, info.container
        run = registry.RunFile(info.container, ref, project.path, started_at)
        await self._files(registry.write_run_file, project.path, run)
        await self._files(registry.register_running, project.path)
        await self._files(registry.write_session_running, project.path, started_at)
        result = ev.RunStarted(
            container=info.container,
            id=info.id,
            image=ref,
            image_id=attrs["Image"],
            port=None,
            started_at=started_at,
            pulled=pulled,
            warnings=warnings,
        )
        self._emit(project.path, result)
        log.info("started %s for %s (%s)", info.container, project.path, ref)
        return result

    # -- stop -------------------------------------------------------------------------------

    async def stop(self, project: Project, grace: float | None) -> RunStopResult:
        tracker = self.tracker(project)
        async with tracker.lock:
            found = await self.engine.call(lambda c: self._find(c, project.path), "find run")
            tracker.clear()
            result = await self._reap(found, grace)
            await self.forget_run(project.path, None)
        if result.stopped:
            self._emit(project.path, ev.RunStopped(containers=result.stopped))
        return result

    async def stop_started_before(self, project: Project, when: float) -> RunStopResult:
        """STOP's stop: the project's running containers that lokid manages and that started
        before `when` (a run started after STOP appeared is not what STOP asked to stop)."""
        tracker = self.tracker(project)
        async with tracker.lock:
            found = await self.engine.call(lambda c: self._find(c, project.path), "find run")
            chosen = [a for a in found if rules.stopped_by_stop_file(records.info(a), when)]
            if not chosen:
                return RunStopResult([], [])
            if tracker.id in {a["Id"] for a in chosen}:
                tracker.clear()
            result = await self._reap(chosen, None)
            for attrs in chosen:
                await self.forget_run(project.path, attrs["Name"].lstrip("/"))
        if result.stopped:
            self._emit(project.path, ev.RunStopped(containers=result.stopped))
        return result

    async def stop_all(self, grace: float | None) -> RunStopResult:
        repository = rules.parse_reference(self.config.image).repository

        def select(client: docker.DockerClient) -> list[dict[str, Any]]:
            images = [records.image(i) for i in client.api.images()]
            ids = {i.id for i in images if rules.belongs_to(i, repository)}
            listed = [records.record(c) for c in client.api.containers(all=True)]
            chosen = rules.select_stop_all(listed, repository, ids)
            return [a for r in chosen if (a := records.inspect(client, r.id)) is not None]

        found = await self.engine.call(select, "list containers")
        by_project: dict[str, list[dict[str, Any]]] = {}
        for attrs in found:
            by_project.setdefault(records.project_of(attrs) or "", []).append(attrs)
        stopped: list[str] = []
        removed: list[str] = []
        for path, group in by_project.items():
            tracker = self.tracker(path) if path else None
            async with tracker.lock if tracker else contextlib.nullcontext():
                if tracker is not None:
                    tracker.clear()
                part = await self._reap(group, grace)
                if path:
                    await self.forget_run(path, None)
            stopped += part.stopped
            removed += part.removed
            if path and part.stopped:
                self._emit(path, ev.RunStopped(containers=part.stopped))
        return RunStopResult(sorted(stopped), sorted(removed))

    async def _reap(self, found: list[dict[str, Any]], grace: float | None) -> RunStopResult:
        timeout = self.config.stop_grace if grace is None else grace
        stopped: list[str] = []
        removed: list[str] = []
        errors: list[LokidError] = []
        for attrs in found:
            name = attrs["Name"].lstrip("/")
            was_running = (attrs.get("State") or {}).get("Running", False)
            try:
                await self.engine.call(
                    lambda c, a=attrs: records.stop_remove(c, a["Id"], timeout), f"stop {name}"
                )
            except LokidError as exc:
                errors.append(exc)  # one that refuses does not spare the others
                continue
            (stopped if was_running else removed).append(name)
        if errors:
            raise errors[0]
        return RunStopResult(stopped, removed)

    async def forget_run(self, path: str, container: str | None) -> None:
        """run.json gone, the registry entry and session.json stopped, together even if
        cancelled."""
        with trio.CancelScope(shield=True):
            await self._files(registry.remove_run_file, path, container)
            await self._files(registry.mark_stopped, path)
            await self._files(registry.mark_session_stopped, path)

    # -- status, list, logs ---------------------------------------------------------------

    async def status(self, project: Project) -> RunInfo | None:
        found = await self.engine.call(lambda c: self._find(c, project.path), "find run")
        if not found:
            return None
        return records.info(
            max(found, key=lambda a: (a["State"].get("Running", False), a["Created"]))
        )

    async def list_runs(self) -> list[RunInfo]:
        repository = rules.parse_reference(self.config.image).repository

        def collect(client: docker.DockerClient) -> list[RunInfo]:
            images = [records.image(i) for i in client.api.images()]
            ids = {i.id for i in images if rules.belongs_to(i, repository)}
            listed = [records.record(c) for c in client.api.containers(all=True)]
            chosen = rules.select_stop_all(listed, repository, ids)
            return [
                records.info(a) for r in chosen if (a := records.inspect(client, r.id)) is not None
            ]

        runs = await self.engine.call(collect, "list containers")
        return sorted(runs, key=lambda r: (r.project or "", r.container))

    async def logs(
        self, project: Project, tail: int | None, deliver: Deliver | None
    ) -> tuple[str, list[str], int]:
        """The run's output; with `deliver`, follow it line by line until the container ends,
        then `deliver(container, None)` marks the end."""
        info = await self.status(project)
        if info is None:
            raise NotFound(f"no run for {project.path}")
        tail_arg: int | str = "all" if tail is None else max(tail, 0)
        if deliver is None:
            raw = await self.engine.call(
                lambda c: c.api.logs(info.id, tail=tail_arg), f"logs {info.container}"
            )
            text = self.engine.clean(raw.decode(errors="replace"))
            return info.container, text.splitlines(), 0
        count = 0
        pending = b""

        async def chunk(data: bytes) -> None:
            nonlocal pending, count
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                count += 1
                await deliver(info.container, self.engine.clean(line.decode(errors="replace")))

        await self.engine.stream(
            lambda c: c.api.logs(info.id, stream=True, follow=True, tail=tail_arg),
            chunk,
            f"logs {info.container}",
        )
        if pending:
            count += 1
            await deliver(info.container, self.engine.clean(pending.decode(errors="replace")))
        await deliver(info.container, None)
        return info.container, [], count

    async def keep_sessions_fresh(self) -> None:
        """For the daemon's life: refresh `updatedAt` in session.json of every run up, since
        Loki Mode's dashboard takes a session without a pid as live only for 5 minutes after
        it (its status panel would call the run stopped)."""
        while True:
            await trio.sleep(self.config.session_refresh)
            for path, tracker in list(self._trackers.items()):
                if tracker.id:
                    await guarded(f"refreshing {path}'s session.json", self._touch, path)

    async def _touch(self, path: str) -> None:
        try:
            await self._files(registry.touch_session, path)
        except OSError as exc:
            raise LokidError(f"{type(exc).__name__}: {exc}") from exc

    def idle(self) -> bool:
        """For idle exit: no run lokid started or adopted is up, and none is being started."""
        return not any(t.id or t.lock.locked() for t in self._trackers.values())
