"""How lokid runs Loki Mode containers, read once from its environment at start."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from lokid.docker.endpoint import Endpoint, resolve_endpoint
from lokid.domain import containers as rules
from lokid.secret_env import secrets_in

# Every container lokid starts gets these (Loki Mode inside must not notify, register itself
# in the host's dashboard registry, or open a new terminal session).
FIXED_ENV = {
    "LOKI_NOTIFICATIONS": "false",
    "LOKI_SKIP_PROJECT_REGISTRY": "1",
    "LOKI_NO_NEW_SESSION": "1",
}


class RunConfig(msgspec.Struct, frozen=True):
    endpoint: Endpoint
    image: str
    pull: str | None  # LOKI_DOCKER_PRUNE as set ("0" turns pull and prune off)
    stop_grace: float  # seconds between SIGTERM and SIGKILL when lokid stops a container
    secrets: dict[str, str]  # the secret variables lokid itself was given, for the container

    @classmethod
    def from_env(cls, stop_grace: float, env: Mapping[str, str] | None = None) -> RunConfig:
        env = os.environ if env is None else env
        return cls(
            endpoint=resolve_endpoint(env),
            image=env.get("LOKI_DOCKER_IMAGE") or rules.DEFAULT_IMAGE,
            pull=env.get("LOKI_DOCKER_PRUNE"),
            stop_grace=stop_grace,
            secrets=secrets_in(env),
        )
