"""`.loki/config/circuit-breakers.yaml`: the breakers' settings per task type.

`defaults` and per-type `overrides` of `failureThreshold`, `cooldownSeconds`,
`halfOpenAfter`, `halfOpenRequests`. A file with an unknown key, a wrong type or a value
out of range is rejected with the key and its line named (`ConfigError`), and the caller
keeps the previous configuration.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import msgspec
import yaml

from lokid.domain.breaker import BreakerConfig
from lokid.errors import ConfigError
from lokid.files.reading import CONFIG_FILE_MAX, FileProblem, read_file

CONFIG_PATH = Path("config") / "circuit-breakers.yaml"  # under .loki/


# Durations a breaker may be given: finite, and at most 30 days (an `.inf` or `1e17` would
# put its half-open time past what a date can hold).
Duration = Annotated[float, msgspec.Meta(ge=0, le=30 * 24 * 3600)]


class BreakerSettings(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    failure_threshold: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    cooldown_seconds: Duration | None = None
    half_open_after: Duration | None = None
    half_open_requests: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None

    def over(self, base: BreakerConfig) -> BreakerConfig:
        given = {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}
        return replace(base, **given)


class BreakersFile(msgspec.Struct, forbid_unknown_fields=True):
    defaults: BreakerSettings = msgspec.field(default_factory=BreakerSettings)
    overrides: dict[str, BreakerSettings] = msgspec.field(default_factory=dict)


class BreakerConfigs:
    """Effective settings per task type: built-in defaults, file defaults, overrides."""

    def __init__(self, parsed: BreakersFile | None = None) -> None:
        parsed = parsed or BreakersFile()
        self.defaults = parsed.defaults.over(BreakerConfig())
        self.overrides = {t: s.over(self.defaults) for t, s in parsed.overrides.items()}

    def for_type(self, task_type: str) -> BreakerConfig:
        return self.overrides.get(task_type, self.defaults)


def parse_config(text: str, source: str = "circuit-breakers.yaml") -> BreakerConfigs:
    try:
        if not text.strip():
            return BreakerConfigs()
        return BreakerConfigs(msgspec.yaml.decode(text, type=BreakersFile))
    except msgspec.ValidationError as exc:
        found = _locate(text, str(exc))
        where = f" line {found[0]}, key {'.'.join(found[1])}" if found else ""
        detail = str(exc).split(" - at `")[0]
        raise ConfigError(f"{source}{where}: {detail}") from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None


def load_config(path: Path) -> BreakerConfigs:
    try:
        data = read_file(path, CONFIG_FILE_MAX)
    except FileProblem as exc:
        raise ConfigError(exc.message) from exc
    if data is None:
        return BreakerConfigs()
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_config(text, str(path))


def _locate(text: str, message: str) -> tuple[int, list[str]] | None:
    """Line and key path of what a msgspec error points at.

    msgspec names struct fields (`$.defaults.failureThreshold`) but hides dict
    keys (`$.overrides[...].failureThreshold`), so `[...]` matches any key.
    """
    at = re.search(r"at `\$([^`]*)`", message)
    steps = re.findall(r"\.([^.\[]+)|(\[\.\.\.\])", at.group(1)) if at else []
    keys = [name or "*" for name, _ in steps]
    unknown = re.search(r"unknown field `([^`]+)`", message)
    if unknown:
        keys.append(unknown.group(1))
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return None
    return _find(root, keys, [])


def _find(node: Any, keys: list[str], path: list[str]) -> tuple[int, list[str]] | None:
    if not keys or not isinstance(node, yaml.MappingNode):
        return None
    want, rest = keys[0], keys[1:]
    for key_node, value_node in node.value:
        if want not in ("*", key_node.value):
            continue
        here = [*path, str(key_node.value)]
        if not rest:
            return key_node.start_mark.line + 1, here
        found = _find(value_node, rest, here)
        if found:
            return found
    return None
