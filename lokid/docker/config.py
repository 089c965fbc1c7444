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
    # Seconds between refreshes of a running run's `.loki/session.json` `updatedAt`: Loki
    # Mode's dashboard takes a pid-less session as live for 5 minutes after it
    # (LOKID_SESSION_REFRESH, default 60).
    session_refresh: float = 60.0

    @classmethod
    def from_env(cls, stop_grace: float, env: Mapping[str, str] | None = None) -> RunConfig:
        env = os.environ if env is None else env
        return cls(
            endpoint=resolve_endpoint(env),
            image=env.get("LOKI_DOCKER_IMAGE") or rules.DEFAULT_IMAGE,
            pull=env.get("LOKI_DOCKER_PRUNE"),
            stop_grace=stop_grace,
            secrets=secrets_in(env),
            session_refresh=_seconds(env.get("LOKID_SESSION_REFRESH"), 60.0),
        )


def _seconds(text: str | None, default: float) -> float:
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    return value if 0 < value < 300 else default
