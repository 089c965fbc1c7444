"""Loki Mode runs in containers: start, stop, status, logs, pull and prune, and the engine watch.

lokid is the one owner of a project's run, so the shell's failure modes go away: a stop finds
the container by run.json, the recomputed name or the labels (never "No active session"
while it runs); the dashboard port is picked among ports no container and no listener holds,
including those reserved by starts still in flight; the registry is written under Loki
Mode's lock. One trio lock per project orders start, stop and the exit handling of its run.

The engine's event stream tells lokid when a container exits by itself. When the stream
breaks (engine stopped) lokid polls until it is back, then reconciles before following
events again: running managed containers are adopted, run.json files of gone ones removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import docker.types
import msgspec
import trio

from lokid.docker import records
from lokid.docker.endpoint import Endpoint, resolve_endpoint
from lokid.docker.engine import Engine
from lokid.domain import prune as rules
from lokid.errors import Conflict, LokidError, NotFound, Unavailable
from lokid.files import registry
from lokid.log import SECRET_VARS
from lokid.wire.times import iso, parse_iso

if TYPE_CHECKING:
    from lokid.daemon import Daemon
    from lokid.projects import Project

from lokid.wire.runs import (
    FailedRemoval,
    ImageUpdateResult,
    RemovedImage,
    RunInfo,
    RunStartParams,
    RunStartResult,
    RunStopResult,
)

log = logging.getLogger("lokid.runs")

PASSTHROUGH = ("ANTHROPIC_API_KEY", "GITHUB_TOKEN", "GH_TOKEN")
FIXED_ENV = {
    "LOKI_NOTIFICATIONS": "false",
    "LOKI_SKIP_PROJECT_REGISTRY": "1",
    "LOKI_NO_NEW_SESSION": "1",
}
RETRY_MIN, RETRY_MAX = 0.2, 2.0  # seconds between attempts to reach a stopped engine
FRESH_RUN_FILE = 5.0  # seconds a shell-written run.json may wait for its container
PROGRESS_EVERY = 0.25  # seconds between image.pull progress events of one layer


class RunConfig(msgspec.Struct, frozen=True):
    endpoint: Endpoint
    image: str
    pull: str | None  # LOKI_DOCKER_PRUNE as set ("0" turns pull and prune off)
    stop_grace: float
    secrets: dict[str, str]  # the passthrough variables lokid itself was given

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RunConfig:
        env = os.environ if env is None else env
        return cls(
            endpoint=resolve_endpoint(env),
            image=env.get("LOKI_DOCKER_IMAGE") or rules.DEFAULT_IMAGE,
            pull=env.get("LOKI_DOCKER_PRUNE"),
            stop_grace=_seconds(env.get("LOKID_STOP_GRACE"), 10.0),
            secrets={k: env[k] for k in PASSTHROUGH if env.get(k)},
        )


def _seconds(text: str | None, default: float) -> float:
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1.0
    if not 0 <= value < 86400:
        log.warning("LOKID_STOP_GRACE=%r is not a number of seconds; using %g", text, default)
        return default
    return value


class Tracker:
    """Per-project run state lokid keeps between requests."""

    __slots__ = ("container", "id", "lock", "port")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.id: str | None = None  # the container lokid started or adopted, while it runs
        self.container: str | None = None
        self.port: int | None = None

    def clear(self) -> None:
        self.id = self.container = self.port = None


class Runs:
    def __init__(self, daemon: Daemon, config: RunConfig) -> None:
        self.daemon = daemon
        self.config = config
        self.engine = Engine(config.endpoint, list(config.secrets.values()))
        self._reserved: set[int] = set()
        # Held from a start's pull to its container's creation, and by every prune, so a
        # prune never removes the image a start in another project is about to run.
        self._images = trio.Lock()

    # -- helpers ------------------------------------------------------------------------

    def tracker(self, project: Project) -> Tracker:
        return project.areas.setdefault("runs", Tracker())

    def publish(self, topic: str, project: str | None, data: dict[str, Any]) -> None:
        self.daemon.hub.publish(topic, project, data)

    def warn(self, project: str | None, message: str, warnings: list[str] | None = None) -> None:
        message = self.engine.clean(message)
        log.warning("%s", message)
        if warnings is not None:
            warnings.append(message)
        self.publish("run.warning", project, {"message": message})

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

    # -- pull and prune -------------------------------------------------------------------

    async def pull(self, image: str, project: str | None) -> str:
        """Pull with `image.pull` progress events per layer; returns the pulled image's id."""
        last: dict[str, tuple[str, float]] = {}

        async def progress(item: dict[str, Any]) -> None:
            if "error" in item:
                raise Unavailable(self.engine.clean(f"pull of {image} failed: {item['error']}"))
            layer, status = item.get("id"), item.get("status", "")
            now = time.monotonic()
            seen = last.get(layer or "")
            if seen and seen[0] == status and now - seen[1] < PROGRESS_EVERY:
                return
            last[layer or ""] = (status, now)
            detail = item.get("progressDetail") or {}
            self.publish(
                "image.pull",
                project,
                {
                    "image": image,
                    "layer": layer,
                    "status": status,
                    "current": detail.get("current"),
                    "total": detail.get("total"),
                },
            )

        await self.engine.stream(
            lambda c: c.api.pull(image, stream=True, decode=True), progress, f"pull {image}"
        )
        attrs = await self.engine.call(lambda c: c.api.inspect_image(image), f"image {image}")
        return attrs["Id"]

    async def _prune_locked(
        self, image: str, keep_id: str, project: str | None
    ) -> ImageUpdateResult:
        """Prune the repository of `image`; the caller holds `_images`."""
        repository = rules.parse_reference(image).repository

        def plan(client: docker.DockerClient) -> rules.PrunePlan:
            images = [records.image(i) for i in client.api.images()]
            used = {c.get("ImageID") for c in client.api.containers(all=True)}
            return rules.select_prune(images, repository, keep_id, used)

        chosen = await self.engine.call(plan, "list images")
        removed: list[RemovedImage] = []
        failed: list[FailedRemoval] = []
        for record in chosen.remove:
            try:
                await self.engine.call(
                    lambda c, r=record: records.remove_image(c, r), "remove image"
                )
                removed.append(RemovedImage(record.id, record.tags or record.digests, record.size))
            except (NotFound, Conflict, Unavailable) as exc:
                failed.append(FailedRemoval(record.id, exc.message))
        reclaimed = sum(r.size for r in removed)
        message = (
            f"removed {len(removed)} image(s) of {repository}, reclaimed {reclaimed} bytes"
            if removed
            else f"nothing to reclaim in {repository}"
        )
        result = ImageUpdateResult(
            image, keep_id, removed, failed, chosen.kept_in_use, reclaimed, message
        )
        self.publish("image.pruned", project, msgspec.to_builtins(result))
        return result

    async def update_image(self, image: str | None) -> ImageUpdateResult:
        ref = rules.with_default_tag(image or self.config.image)
        async with self._images:
            keep_id = await self.pull(ref, None)
            return await self._prune_locked(ref, keep_id, None)

    async def _pull_for_start(self, ref: str, path: str, warnings: list[str]) -> bool:
        try:
            keep_id = await self.pull(ref, path)
        except (Unavailable, NotFound) as exc:
            if not self.engine.up:
                raise
            present = await self.engine.call(lambda c: records.image_present(c, ref))
            if not present:
                raise
            self.warn(path, f"pull of {ref} failed, using the local image: {exc.message}", warnings)
            return False
        await self._prune_locked(ref, keep_id, path)
        return True

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
            async with self._images:
                pulled = await self._ensure_image(ref, path, params, warnings)
                await self._check_not_running(path)
                port = await self._pick_port() if params.api else None
                # Once the engine is asked to create it, the container must be recorded
                # (run.json, registry, tracker) even if the client goes away meanwhile.
                with trio.CancelScope(shield=True):
                    try:
                        attrs = await self._create(path, ref, params, port)
                    finally:
                        if port is not None:
                            self._reserved.discard(port)
                    return await self._record_start(
                        project, tracker, attrs, ref, port, pulled, warnings
                    )

    async def _ensure_image(
        self, ref: str, path: str, params: RunStartParams, warnings: list[str]
    ) -> bool:
        """Pull and prune unless pulling is off; True when a pull succeeded."""
        if rules.pull_enabled(self.config.pull, params.pull):
            return await self._pull_for_start(ref, path, warnings)
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

    async def _pick_port(self) -> int:
        containers = await self.engine.call(lambda c: c.api.containers(), "list containers")
        # The engine lists published ports only when a network carries them; lokid's own
        # runs and the starts still in flight hold theirs regardless.
        tracked = {t.port for p in self.daemon.projects if (t := p.areas.get("runs")) and t.port}
        busy = records.published_ports(containers) | self._reserved | tracked

        def probe() -> set[int]:
            return {
                p for p in rules.dashboard_ports() if p not in busy and records.bound_locally(p)
            }

        busy |= await trio.to_thread.run_sync(probe)
        port = rules.pick_port(busy)
        if port is None:
            first = rules.DASHBOARD_PORT
            raise Conflict(
                f"no free dashboard port in {first}-{first + rules.PORT_TRIES - 1}",
            )
        self._reserved.add(port)
        return port

    def _environment(self, params: RunStartParams, port: int | None) -> dict[str, str]:
        env = {**FIXED_ENV}
        env.update({k: v for k, v in self.config.secrets.items()})
        env.update(params.env)
        if port is None:
            env["LOKI_DASHBOARD"] = "false"
        else:
            env.update(LOKI_DASHBOARD="true", LOKI_DASHBOARD_PORT=str(port))
        return env

    async def _create(
        self, path: str, ref: str, params: RunStartParams, port: int | None
    ) -> dict[str, Any]:
        name = rules.container_name(path)
        env = self._environment(params, port)
        secrets = [v for k, v in env.items() if k in SECRET_VARS and v]

        def create(client: docker.DockerClient) -> dict[str, Any]:
            stale = records.inspect(client, name)
            if stale is not None and not stale["State"].get("Running"):
                client.api.remove_container(stale["Id"], force=True)
            host_config = client.api.create_host_config(
                mounts=[docker.types.Mount(records.WORKSPACE, path, type="bind", read_only=False)],
                port_bindings={port: port} if port else None,
            )
            created = client.api.create_container(
                ref,
                command=list(params.args),
                name=name,
                labels=rules.managed_labels(path),
                environment=env,
                working_dir=records.WORKSPACE,
                ports=[port] if port else None,
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
        port: int | None,
        pulled: bool,
        warnings: list[str],
    ) -> RunStartResult:
        info = records.info(attrs)
        started_at = info.started_at or iso(time.time())
        tracker.id, tracker.container, tracker.port = info.id, info.container, port
        if port is not None:
            self._reserved.discard(port)
        run = registry.RunFile(info.container, ref, project.path, started_at)
        await self._files(registry.write_run_file, project.path, run)
        await self._files(registry.register_running, project.path, port)
        result = RunStartResult(
            info.container, info.id, ref, attrs["Image"], port, started_at, pulled, warnings
        )
        self.publish("run.started", project.path, msgspec.to_builtins(result))
        log.info("started %s for %s (%s)", info.container, project.path, ref)
        return result

    # -- stop -------------------------------------------------------------------------------

    async def stop(self, project: Project, grace: float | None) -> RunStopResult:
        tracker = self.tracker(project)
        async with tracker.lock:
            found = await self.engine.call(lambda c: self._find(c, project.path), "find run")
            tracker.clear()
            result = await self._reap(found, grace)
            await self._forget_run(project.path, None)
        if result.stopped:
            self.publish("run.stopped", project.path, {"containers": result.stopped})
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
            project = self.daemon.projects.known(path) if path else None
            tracker = self.tracker(project) if project is not None else None
            async with tracker.lock if tracker else contextlib.nullcontext():
                if tracker is not None:
                    tracker.clear()
                part = await self._reap(group, grace)
                if path:
                    await self._forget_run(path, None)
            stopped += part.stopped
            removed += part.removed
            if path and part.stopped:
                self.publish("run.stopped", path, {"containers": part.stopped})
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

    async def _forget_run(self, path: str, container: str | None) -> None:
        """run.json gone and the registry entry stopped, together even if cancelled."""
        with trio.CancelScope(shield=True):
            await self._files(registry.remove_run_file, path, container)
            await self._files(registry.mark_stopped, path)

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
        self, project: Project, tail: int | None, deliver: Any | None
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

    def idle(self) -> bool:
        """For idle exit: no run lokid started or adopted is up, and none is being started."""
        for project in self.daemon.projects:
            tracker = project.areas.get("runs")
            if tracker is not None and (tracker.id or tracker.lock.locked()):
                return False
        return not self._reserved

    # -- the engine watch ----------------------------------------------------------------

    async def watch(self, daemon: Daemon) -> None:
        """Service: follow container exits; while the engine is away, retry, then reconcile."""
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

    async def _guarded(self, fn: Any, *args: Any) -> None:
        """Background work: an engine that goes away mid-way is retried by the watch."""
        try:
            await fn(*args)
        except Unavailable as exc:
            log.info("%s", exc.message)
        except Exception:
            log.exception("%s failed", getattr(fn, "__name__", fn))

    async def _follow_events(self, nursery: trio.Nursery) -> None:
        """Open the event stream first, then reconcile, so no exit falls between the two."""
        filters = {
            "type": "container",
            "event": ["die"],
            "label": f"{rules.MANAGED_LABEL}={rules.MANAGED_VALUE}",
        }

        def open_events(client: docker.DockerClient) -> Any:
            stream = client.events(decode=True, filters=filters)
            trio.from_thread.run_sync(nursery.start_soon, self._guarded, self.reconcile)
            return stream

        async def on_event(event: dict[str, Any]) -> None:
            nursery.start_soon(self._guarded, self._on_die, event)

        await self.engine.stream(open_events, on_event, "docker events")
        raise Unavailable(f"the event stream of {self.engine.endpoint.host} ended")

    async def _on_die(self, event: dict[str, Any]) -> None:
        actor = event.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        path = attrs.get(rules.PROJECT_LABEL)
        try:
            project = self.daemon.projects.get(path) if path else None
        except LokidError:
            project = None
        if project is None:
            return
        tracker = self.tracker(project)
        container_id = actor.get("ID") or event.get("id")
        name = attrs.get("name") or tracker.container
        async with tracker.lock:
            if tracker.id is not None and tracker.id != container_id:
                return  # an older container of the project
            if tracker.id is None:
                # Stopped by lokid (which forgets the run itself), or died before the
                # reconcile adopted it: then run.json still names it.
                run = await self._files(registry.read_run_file, project.path)
                if run is None or run.container != name:
                    return
            tracker.clear()
            code = int(attrs.get("exitCode", -1))
            await self._forget_run(project.path, name)
        self.publish("run.exited", project.path, {"container": name, "exitCode": code})
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
        candidates |= {p.path for p in self.daemon.projects}
        entries = await self._files(registry.registry_entries)
        candidates |= {e["path"] for e in entries if e.get("status") == "running" and e.get("path")}
        async with trio.open_nursery() as nursery:
            for path in candidates - running:
                nursery.start_soon(self._guarded, self._clean_gone, path)

    async def _adopt(self, path: str, attrs: dict[str, Any]) -> None:
        try:
            project = self.daemon.projects.get(path)
        except Exception:
            return
        tracker = self.tracker(project)
        async with tracker.lock:
            if tracker.id == attrs["Id"]:
                return
            # It may have died since the survey, its exit handled already: look again.
            now = await self.engine.call(lambda c: records.inspect(c, attrs["Id"]), "inspect")
            if now is None or not now["State"].get("Running"):
                return
            tracker.id, tracker.container = attrs["Id"], attrs["Name"].lstrip("/")
            tracker.port = records.port_of(attrs)
        log.info("adopted %s of %s", tracker.container, path)
        self.publish("run.adopted", path, {"container": tracker.container, "id": attrs["Id"]})

    async def _clean_gone(self, path: str) -> None:
        run = await self._files(registry.read_run_file, path)
        if run is not None and (wait := _young(run.started_at, time.time())):
            await trio.sleep(wait)
            run = await self._files(registry.read_run_file, path)
        if run is None:
            return
        attrs = await self.engine.call(lambda c: records.inspect(c, run.container), "inspect")
        if attrs is not None and (attrs.get("State") or {}).get("Running"):
            return
        project = self.daemon.projects.known(path)
        if project is not None:
            self.tracker(project).clear()
        await self._forget_run(path, run.container)
        log.info("run.json of %s named %s, which is gone; removed", path, run.container)


def _young(started_at: str, now: float) -> float:
    """Seconds until a run.json counts as settled. Loki Mode's shell writes it just before
    its `docker run`, so a young file whose container is not up yet may be about to start."""
    try:
        return max(0.0, FRESH_RUN_FILE - (now - parse_iso(started_at)))
    except ValueError:
        return 0.0


_RUNS: dict[int, Runs] = {}


def install(daemon: Daemon, env: Mapping[str, str] | None = None) -> Runs:
    """Give `daemon` container runs: the manager, and the engine watch as a service."""
    runs = Runs(daemon, RunConfig.from_env(env))
    _RUNS[id(daemon)] = runs
    daemon.services.append(runs.watch)
    daemon.idle_checks.append(runs.idle)
    daemon.stop_hooks.append(lambda: _RUNS.pop(id(daemon), None))
    return runs


def runs_of(daemon: Daemon) -> Runs:
    runs = _RUNS.get(id(daemon))
    if runs is None:
        raise Unavailable("container runs are not enabled in this lokid")
    return runs
