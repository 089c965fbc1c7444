"""Several lokid instances serving one queue in PostgreSQL, as on several hosts: each has
its own socket, state folder and project checkout (its own `.loki/` files and views), and
every checkout names the same queue in `.loki/config/queue-store.yaml`."""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lokictl import Client, DaemonError
from support import Lokid, wait_until

REPORT = {"decisionReport": {"why": "done"}}
STATES = ("pending", "in-progress", "completed", "dead-letter", "cancelled")
_names = itertools.count()


@dataclass
class Instance:
    lokid: Lokid
    project: Path

    def call(self, method: str, **params: Any) -> Any:
        return self.lokid.call(method, {"project": str(self.project), **params})

    def client(self) -> Client:
        return self.lokid.client()

    def view_ids(self, state: str) -> list[str]:
        path = self.project / ".loki" / "queue" / f"{state}.json"
        return [t["id"] for t in json.loads(path.read_bytes())] if path.exists() else []


def start_instances(
    root: Path,
    url: str,
    n: int,
    breakers: str = "",
    each: list[dict[str, str]] | None = None,
) -> list[Instance]:
    """`n` lokids on one queue; `breakers` is each checkout's circuit-breakers.yaml, and
    `each[i]` more environment for instance i."""
    name = f"shared-{root.name}-{next(_names)}"
    out = []
    for i in range(n):
        home = root / f"host{i}"
        project = home / "app"
        config = project / ".loki" / "config"
        config.mkdir(parents=True)
        (config / "queue-store.yaml").write_text(f"name: {name}\n")
        if breakers:
            (config / "circuit-breakers.yaml").write_text(breakers)
        more = each[i] if each else {}
        lokid = Lokid(home, env={"LOKID_STORE": url, "LOKID_LOG_LEVEL": "info", **more})
        out.append(Instance(lokid, project))
    for instance in out:
        instance.lokid.start(wait=False)
    for instance in out:  # each host's lokid watches its checkout (and so follows the queue)
        wait_until(instance.lokid._answers, 20, "lokid to answer")
        instance.lokid.call("project.add", {"path": str(instance.project)})
    return out


def stop_instances(instances: list[Instance]) -> None:
    for instance in instances:
        instance.lokid.kill()


def database_ids(instance: Instance) -> dict[str, list[str]]:
    """Every task id per state, as the database has them (read through `instance`)."""
    out: dict[str, list[str]] = {}
    for state in STATES:
        ids, cursor = [], None
        while True:
            page = instance.call("queue.list", state=state, limit=1000, cursor=cursor)
            ids += [t["id"] for t in page["tasks"]]
            cursor = page["cursor"]
            if cursor is None:
                break
        out[state] = ids
    return out


def views_equal_database(instances: list[Instance]) -> bool:
    truth = database_ids(instances[0])
    return all(
        instance.view_ids(state) == truth[state] for instance in instances for state in STATES
    )


@dataclass
class Ledger:
    """What the agents were told: every acknowledged outcome, and anything unexpected."""

    completed: dict[str, str] = field(default_factory=dict)  # task -> agent
    failed: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, task_id: str, agent: str) -> None:
        with self.lock:
            if task_id in self.completed:
                self.problems.append(
                    f"{task_id} completed twice ({self.completed[task_id]}, {agent})"
                )
            self.completed[task_id] = agent


def is_retryable(exc: BaseException) -> bool:
    """What an agent waits out: lokid or its database away for a moment."""
    if isinstance(exc, DaemonError):
        return exc.code == "unavailable"
    return isinstance(exc, OSError | ConnectionError) or type(exc).__name__ in (
        "ProtocolError",
        "NotRunning",
    )
