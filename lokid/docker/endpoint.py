"""Which Docker engine to talk to, found the way the docker CLI finds it.

`DOCKER_HOST` first; else the CLI's current context (`DOCKER_CONTEXT`, else `currentContext`
in `~/.docker/config.json`), whose endpoint is in `contexts/meta/<sha256(name)>/meta.json`;
else the platform default. The SDK's `from_env()` ignores contexts, so Docker Desktop, Colima
and OrbStack users (whose engine is only named by a context) would reach no engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import msgspec


class Endpoint(msgspec.Struct, frozen=True):
    host: str
    source: str  # "DOCKER_HOST", "context <name>", or "default"


def platform_default() -> str:
    if sys.platform == "win32":
        return "npipe:////./pipe/docker_engine"
    return "unix:///var/run/docker.sock"


def _config_dir(env: Mapping[str, str]) -> Path:
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"])
    return Path(env.get("HOME") or Path.home()) / ".docker"


def _read_json(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def context_host(name: str, config_dir: Path) -> str | None:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = _read_json(config_dir / "contexts" / "meta" / digest / "meta.json")
    host = meta.get("Endpoints", {}).get("docker", {}).get("Host")
    return host if isinstance(host, str) and host else None


def resolve_endpoint(env: Mapping[str, str] | None = None) -> Endpoint:
    env = os.environ if env is None else env
    if env.get("DOCKER_HOST"):
        return Endpoint(env["DOCKER_HOST"], "DOCKER_HOST")
    config_dir = _config_dir(env)
    name = env.get("DOCKER_CONTEXT") or _read_json(config_dir / "config.json").get("currentContext")
    if isinstance(name, str) and name and name != "default":
        host = context_host(name, config_dir)
        if host:
            return Endpoint(host, f"context {name}")
    return Endpoint(platform_default(), "default")
