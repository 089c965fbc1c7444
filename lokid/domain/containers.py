"""Pure rules of the container lifecycle: names, image references, prune and stop selection,
the dashboard port pick. Data in, decisions out; the Docker adapter does the I/O.

Image references follow Docker's grammar, `[registry[:port]/]path[:tag][@digest]`; a colon
after the last slash starts a tag (so a registry port is not one). Docker Hub's spellings
(`docker.io/library/x`) fold to the short form, as the engine itself compares them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable

import msgspec

from lokid.wire.runs import RunInfo
from lokid.wire.times import parse_iso

DEFAULT_IMAGE = "asklokesh/loki-mode:latest"
DASHBOARD_PORT = 57374
PORT_TRIES = 50
MANAGED_LABEL = "dev.loki.managed-by"
MANAGED_VALUE = "lokid"
PROJECT_LABEL = "dev.loki.project"


class Reference(msgspec.Struct, frozen=True):
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


class ImageRecord(msgspec.Struct, frozen=True):
    """What the engine says about one local image (`RepoTags`, `RepoDigests`, `Size`)."""

    id: str
    tags: list[str] = []
    digests: list[str] = []
    size: int = 0


class ContainerRecord(msgspec.Struct, frozen=True):
    """One container as the engine lists it; `image` is the reference it was created from."""

    id: str
    name: str
    image_id: str
    image: str = ""
    running: bool = False
    labels: dict[str, str] = {}


def project_id(path: str) -> str:
    """Loki Mode's project id: sha256 of the path exactly as given, first 12 hex digits."""
    return hashlib.sha256(path.encode()).hexdigest()[:12]


def container_name(path: str) -> str:
    """`loki-<sha12>`: the name Loki Mode's shell gives the container of `path`'s run."""
    return f"loki-{project_id(path)}"


def managed_labels(path: str) -> dict[str, str]:
    return {MANAGED_LABEL: MANAGED_VALUE, PROJECT_LABEL: path}


def is_managed(labels: dict[str, str]) -> bool:
    return labels.get(MANAGED_LABEL) == MANAGED_VALUE


def normalize_repository(repository: str) -> str:
    """Docker Hub spellings folded: `docker.io/library/x` and `index.docker.io/x` are `x`."""
    for hub in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if repository.startswith(hub):
            repository = repository[len(hub) :]
            break
    if repository.startswith("library/") and repository.count("/") == 1:
        repository = repository[len("library/") :]
    return repository


def parse_reference(ref: str) -> Reference:
    """Split a reference into repository, tag and digest (a port is not a tag)."""
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    tag = None
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref, tag = ref[:colon], ref[colon + 1 :]
    return Reference(normalize_repository(ref), tag, digest)


def with_default_tag(ref: str) -> str:
    """`repo` means `repo:latest`, as `docker pull` reads it; a digest stays as it is."""
    parsed = parse_reference(ref)
    if parsed.tag is None and parsed.digest is None:
        return f"{parsed.repository}:latest"
    return str(parsed)


def image_repositories(image: ImageRecord) -> set[str]:
    return {parse_reference(ref).repository for ref in (*image.tags, *image.digests)}


def belongs_to(image: ImageRecord, repository: str) -> bool:
    """Only the repository's: some tag or digest names it, and none names another repository.

    Matching digests too finds an old image whose tag moved to the new pull: it lost its tag
    but keeps `repo@sha256:...`. An image also tagged for another repository is not ours.
    """
    repos = image_repositories(image)
    return normalize_repository(repository) in repos and len(repos) == 1


class PrunePlan(msgspec.Struct, frozen=True):
    remove: list[ImageRecord]
    kept_in_use: list[str]


def select_prune(
    images: Iterable[ImageRecord],
    repository: str,
    keep_id: str,
    in_use_ids: Collection[str],
) -> PrunePlan:
    """The images of `repository` to remove after a pull of `keep_id`.

    Never the image just pulled, never one any container uses (running or not), never one
    of another repository. Removing the rest is what `docker image prune -a` must not do
    to other repositories, so the rule only ever looks at this one.
    """
    remove: list[ImageRecord] = []
    in_use: list[str] = []
    for image in images:
        if image.id == keep_id or not belongs_to(image, repository):
            continue
        if image.id in in_use_ids:
            in_use.append(image.id)
        else:
            remove.append(image)
    return PrunePlan(remove, in_use)


def select_stop_all(
    containers: Iterable[ContainerRecord], repository: str, repo_image_ids: Collection[str]
) -> list[ContainerRecord]:
    """`run.stop {all}`: every container lokid manages, and every running one of the image's
    repository (Loki Mode's shell starts those with `--rm`; an exited one is not ours to drop).

    A container counts as the repository's when it was created from a reference of that
    repository or runs one of the repository's local images (its tag may have moved since).
    """
    repo = normalize_repository(repository)
    chosen = []
    for c in containers:
        from_repo = c.image_id in repo_image_ids or (
            c.image != "" and parse_reference(c.image).repository == repo
        )
        if is_managed(c.labels) or (from_repo and c.running):
            chosen.append(c)
    return chosen


def stopped_by_stop_file(run: RunInfo, appeared: float) -> bool:
    """Does `.loki/STOP`, which appeared at `appeared`, make lokid stop this run? Only a
    running one lokid manages (Loki Mode's own runs honour STOP themselves), started
    before STOP appeared."""
    if not run.managed or run.state != "running" or run.started_at is None:
        return False
    return parse_iso(run.started_at) < appeared


def dashboard_ports(start: int = DASHBOARD_PORT, tries: int = PORT_TRIES) -> range:
    return range(start, start + tries)


def pick_port(
    busy: Collection[int], start: int = DASHBOARD_PORT, tries: int = PORT_TRIES
) -> int | None:
    """57374 first, then the next one not busy, at most `tries` ports; None when all are."""
    for port in dashboard_ports(start, tries):
        if port not in busy:
            return port
    return None


def pull_enabled(env_value: str | None, param: bool | None) -> bool:
    """`LOKI_DOCKER_PRUNE=0` (Loki Mode's switch) or `pull: false` turns pull and prune off."""
    return env_value != "0" and param is not False
