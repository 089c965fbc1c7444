"""The Loki Mode image: pull with progress events, and prune the repository's old images.

One trio lock (`lock`) is held from a start's pull to its container's creation and by every
prune, so a prune never removes the image a start in another project is about to run.
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
from lokid.domain import containers as rules
from lokid.errors import Conflict, NotFound, Unavailable
from lokid.wire import events as ev
from lokid.wire.runs import FailedRemoval, ImageUpdateResult, RemovedImage

PROGRESS_EVERY = 0.25  # seconds between image.pull progress events of one layer

log = logging.getLogger("lokid.runs")

Emit = Callable[[str | None, Any], None]


class Images:
    def __init__(self, engine: Engine, default_image: str, emit: Emit) -> None:
        self.engine = engine
        self.default_image = default_image
        self._emit = emit
        self.lock = trio.Lock()

    def _warn(self, project: str | None, message: str, warnings: list[str]) -> None:
        """A start carries on despite something: the client, subscribers and the log hear."""
        message = self.engine.clean(message)
        log.warning("%s", message)
        warnings.append(message)
        self._emit(project, ev.RunWarning(message=message))

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
            self._emit(
                project,
                ev.ImagePull(
                    image=image,
                    layer=layer,
                    status=status,
                    current=detail.get("current"),
                    total=detail.get("total"),
                ),
            )

        await self.engine.stream(
            lambda c: c.api.pull(image, stream=True, decode=True), progress, f"pull {image}"
        )
        attrs = await self.engine.call(lambda c: c.api.inspect_image(image), f"image {image}")
        return attrs["Id"]

    async def prune_locked(
        self, image: str, keep_id: str, project: str | None
    ) -> ImageUpdateResult:
        """Prune the repository of `image`; the caller holds `lock`."""
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
        result = ev.ImagePruned(
            image=image,
            id=keep_id,
            removed=removed,
            failed=failed,
            kept_in_use=chosen.kept_in_use,
            reclaimed_bytes=reclaimed,
            message=message,
        )
        self._emit(project, result)
        return result

    async def update_image(self, image: str | None) -> ImageUpdateResult:
        ref = rules.with_default_tag(image or self.default_image)
        async with self.lock:
            keep_id = await self.pull(ref, None)
            return await self.prune_locked(ref, keep_id, None)

    async def pull_for_start(self, ref: str, path: str, warnings: list[str]) -> bool:
        """Pull and prune before a start; a failed pull with the image present carries on
        with a warning. True when the pull succeeded. (The caller holds `lock`.)"""
        try:
            keep_id = await self.pull(ref, path)
        except (Unavailable, NotFound) as exc:
            if not self.engine.up:
                raise
            present = await self.engine.call(lambda c: records.image_present(c, ref))
            if not present:
                raise
            self._warn(
                path, f"pull of {ref} failed, using the local image: {exc.message}", warnings
            )
            return False
        await self.prune_locked(ref, keep_id, path)
        return True
