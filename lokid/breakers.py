"""The circuit breakers of one project's task types: config, state, events.

The state machine is `lokid.domain.breaker`; this module loads
`.loki/config/circuit-breakers.yaml`, keeps one `Breaker` per type in the
queue's database, and reports transitions. It runs inside the queue's
transactions, so a claim and the probe it reserves commit together.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import msgspec
import yaml

from lokid.domain import breaker as rules
from lokid.domain.breaker import Admission, Breaker, BreakerConfig
from lokid.store.base import BreakerRow, QueueStore
from lokid.wire.queue import Blocked
from lokid.wire.times import iso_or_none

CONFIG_PATH = Path("config") / "circuit-breakers.yaml"  # under .loki/

Emit = Callable[[str, dict[str, Any]], None]
Touch = Callable[..., None]


class BreakerSettings(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    failure_threshold: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    cooldown_seconds: Annotated[float, msgspec.Meta(ge=0)] | None = None
    half_open_after: Annotated[float, msgspec.Meta(ge=0)] | None = None
    half_open_requests: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None

    def over(self, base: BreakerConfig) -> BreakerConfig:
        given = {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}
        return replace(base, **given)


class BreakersFile(msgspec.Struct, forbid_unknown_fields=True):
    defaults: BreakerSettings = msgspec.field(default_factory=BreakerSettings)
    overrides: dict[str, BreakerSettings] = msgspec.field(default_factory=dict)


class ConfigError(Exception):
    """The YAML file was rejected; the message names the key and line."""


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
        data = path.read_bytes()
    except FileNotFoundError:
        return BreakerConfigs()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
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


class Breakers:
    def __init__(self, store: QueueStore, emit: Emit, touch: Touch, config: BreakerConfigs):
        self._store = store
        self._emit = emit
        self._touch = touch
        self.config = config
        self._by_type: dict[str, Breaker] = {}
        # Copy-on-write undo for the open transaction: a rollback (a failed commit, a full
        # disk) puts back the breakers it changed, so memory never drifts from the database.
        self._undo: dict[str, Breaker | None] | None = None
        for row in store.breakers():
            self._by_type[row.type] = Breaker(
                row.state,  # type: ignore[arg-type]
                row.failures,
                row.last_failure,
                row.opened_at,
                row.half_open_at,
                row.forced,
                row.reason,
            )
        for task_type, probes in store.probes_in_flight():
            self._get(task_type).probes = probes

    def _get(self, task_type: str) -> Breaker:
        b = self._by_type.get(task_type)
        if b is None:
            b = self._by_type[task_type] = Breaker()
        return b

    def _mutable(self, task_type: str) -> Breaker:
        """The breaker, about to change: remember it as it was for a rollback."""
        if self._undo is not None and task_type not in self._undo:
            before = self._by_type.get(task_type)
            self._undo[task_type] = None if before is None else replace(before)
        return self._get(task_type)

    def begin(self) -> None:
        if self._undo is None:
            self._undo = {}

    def commit(self) -> None:
        self._undo = None

    def rollback(self) -> None:
        for task_type, before in (self._undo or {}).items():
            if before is None:
                self._by_type.pop(task_type, None)
            else:
                self._by_type[task_type] = before
        self._undo = None

    def _apply(
        self, task_type: str, b: Breaker, topics: list[str], changed: bool = False, **data: Any
    ) -> None:
        """Store the breaker if anything changed, and announce its transitions."""
        if not topics and not changed:
            return
        self._store.save_breaker(
            BreakerRow(
                task_type, b.state, b.failures, b.last_failure, b.opened_at,
                b.half_open_at, b.forced, b.reason,
            )
        )  # fmt: skip
        self._touch("breakers")
        for topic in topics:
            self._emit(topic, {"type": task_type, **self.view(task_type, b), **data})

    # -- what the queue asks -----------------------------------------------------------

    def admit(self, task_type: str, now: float) -> Admission:
        b = self._by_type.get(task_type)
        if b is None or b.state == "closed":
            return _OPEN_DOOR
        cfg = self.config.for_type(task_type)
        if rules.half_open_due(b, cfg, now):
            b = self._mutable(task_type)
            self._apply(task_type, b, rules.advance(b, cfg, now))
        return rules.admit(b, cfg)

    @staticmethod
    def blocked(admission: Admission) -> Blocked:
        return Blocked(admission.state, iso_or_none(admission.until))

    def probe_claimed(self, task_type: str, now: float) -> None:
        rules.probe_claimed(self._mutable(task_type))

    def probe_released(self, task_type: str) -> None:
        rules.probe_released(self._mutable(task_type))

    def record_failure(self, task_type: str, now: float, probe: bool) -> None:
        b = self._mutable(task_type)
        cfg = self.config.for_type(task_type)
        topics = rules.advance(b, cfg, now) + rules.record_failure(b, cfg, now, probe)
        self._apply(task_type, b, topics, changed=True)

    def record_success(self, task_type: str, now: float, probe: bool) -> None:
        b = self._by_type.get(task_type)
        if b is None or (b.state == "closed" and b.failures == 0):
            return
        b = self._mutable(task_type)
        topics = rules.record_success(b, probe)
        self._apply(task_type, b, topics, changed=True)

    def record_rate_limit(self, task_type: str, now: float, probe: bool) -> None:
        """Rate limits are never failures; a probe that hit one frees its slot."""
        if probe:
            self.probe_released(task_type)

    # -- manual control and reading ----------------------------------------------------

    def reset(self, task_type: str) -> dict[str, Any]:
        b = self._mutable(task_type)
        self._apply(task_type, b, rules.reset(b))
        return self.view(task_type, b)

    def trip(self, task_type: str, now: float, reason: str) -> dict[str, Any]:
        b = self._mutable(task_type)
        self._apply(task_type, b, rules.trip(b, now, reason), reason=reason)
        return self.view(task_type, b)

    def tick(self, now: float) -> None:
        """Turn due open breakers half-open now, so the event goes out without a claim."""
        for task_type, b in list(self._by_type.items()):
            cfg = self.config.for_type(task_type)
            if rules.half_open_due(b, cfg, now):
                b = self._mutable(task_type)
                self._apply(task_type, b, rules.advance(b, cfg, now))

    def next_half_open(self) -> float | None:
        times = [
            b.opened_at + self.config.for_type(t).half_open_after
            for t, b in self._by_type.items()
            if b.state == "open" and not b.forced and b.opened_at is not None
        ]
        return min(times, default=None)

    def listing(self, now: float) -> dict[str, dict[str, Any]]:
        """Every known breaker, brought up to `now` (call inside a transaction)."""
        self.tick(now)
        return self.snapshot()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {t: self.view(t, b) for t, b in sorted(self._by_type.items())}

    def view(self, task_type: str, b: Breaker | None = None) -> dict[str, Any]:
        """The state file's fields, as Loki Mode's reference names them."""
        b = b or self._get(task_type)
        cfg = self.config.for_type(task_type)
        half_open_at = b.half_open_at
        if b.state == "open" and not b.forced and b.opened_at is not None:
            half_open_at = b.opened_at + cfg.half_open_after
        return {
            "state": b.state,
            "failures": b.failures,
            "lastFailure": iso_or_none(b.last_failure),
            "openedAt": iso_or_none(b.opened_at),
            "halfOpenAt": iso_or_none(half_open_at),
            "forced": b.forced,
            "reason": b.reason,
        }


_OPEN_DOOR = Admission(True)
