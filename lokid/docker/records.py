"""The engine's answers as lokid reads them, and the few blocking SDK calls built on them.

Plain functions over the raw dicts of the Docker API (`containers`, `inspect_container`,
`images`); the ones taking a client block and run in the engine's worker threads.
"""

from __future__ import annotations

import contextlib
from typing import Any

import docker
import docker.errors

from lokid.domain import containers as rules
from lokid.wire.runs import RunInfo
from lokid.wire.times import iso, parse_iso

WORKSPACE = "/workspace"


def record(raw: dict[str, Any]) -> rules.ContainerRecord:
    names = raw.get("Names") or []
    return rules.ContainerRecord(
        id=raw["Id"],
        name=names[0].lstrip("/") if names else raw["Id"][:12],
        image_id=raw.get("ImageID") or "",
        image=raw.get("Image") or "",
        running=raw.get("State") == "running",
        labels=raw.get("Labels") or {},
    )


def image(raw: dict[str, Any]) -> rules.ImageRecord:
    tags = [t for t in raw.get("RepoTags") or [] if t != "<none>:<none>"]
    digests = [d for d in raw.get("RepoDigests") or [] if d != "<none>@<none>"]
    return rules.ImageRecord(raw["Id"], tags, digests, raw.get("Size") or 0)


def workspace_of(attrs: dict[str, Any]) -> str | None:
    for mount in attrs.get("Mounts") or []:
        if mount.get("Destination") == WORKSPACE:
            return mount.get("Source")
    return None


def project_of(attrs: dict[str, Any]) -> str | None:
    labels = (attrs.get("Config") or {}).get("Labels") or attrs.get("Labels") or {}
    return labels.get(rules.PROJECT_LABEL) or workspace_of(attrs)


def port_of(attrs: dict[str, Any]) -> int | None:
    bindings = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
    for binds in bindings.values():
        for bind in binds or []:
            if bind.get("HostPort"):
                return int(bind["HostPort"])
    return None


def info(attrs: dict[str, Any]) -> RunInfo:
    state = attrs.get("State") or {}
    running = state.get("Running", False)
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    started = state.get("StartedAt") or None
    if started and started.startswith("0001-"):
        started = None
    return RunInfo(
        project=project_of(attrs),
        container=attrs["Name"].lstrip("/"),
        id=attrs["Id"],
        image=(attrs.get("Config") or {}).get("Image") or "",
        state=state.get("Status") or "unknown",
        started_at=engine_time(started) if started else None,
        port=port_of(attrs),
        exit_code=None if running else state.get("ExitCode"),
        managed=rules.is_managed(labels),
    )


def engine_time(text: str) -> str:
    """The engine's nanosecond RFC 3339 (`...05.123456789Z`) as lokid's millisecond ISO."""
    head, _, frac = text.rstrip("Z").partition(".")
    return iso(parse_iso(f"{head}.{(frac or '0')[:6]}Z"))


def inspect(client: docker.DockerClient, ref: str) -> dict[str, Any] | None:
    try:
        return client.api.inspect_container(ref)
    except docker.errors.NotFound:
        return None


def image_present(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def remove_image(client: docker.DockerClient, record: rules.ImageRecord) -> None:
    """Untag each of the repository's tags, then the image itself (a dangling one has none)."""
    for tag in record.tags:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_image(tag)
    with contextlib.suppress(docker.errors.NotFound):  # the last untag may have removed it
        client.api.remove_image(record.id)


def stop_remove(client: docker.DockerClient, container_id: str, timeout: float) -> None:
    """Stop then remove; a container already gone (or being removed, `--rm`) counts as done."""
    try:
        client.api.stop(container_id, timeout=round(timeout))
        client.api.remove_container(container_id, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409 or "already in progress" not in str(exc):
            raise
