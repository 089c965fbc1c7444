"""200 concurrent clients against one real daemon, then SIGKILL during that load.

Each client is a thread with its own blocking `lokictl.Client` and socket, mixing enqueue,
claim, complete, fail and cancel; a few only subscribe. Every acknowledged operation is
written down, and every claim is checked against who holds the task right now: a client
forgets a task *before* asking to release it, so a second claim while it is still
remembered is a real double hold. Afterwards the database, the event stream and the JSON
views must tell the same story.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lokictl import Client, DaemonError
from support import Lokid, join_all, wait_until

CLIENTS = 200
SUBSCRIBERS = 10  # of the 200, these only subscribe and read
LOAD_SECONDS = 15.0
STATES = ("pending", "in-progress", "completed", "dead-letter", "cancelled")
REPORT = {"decisionReport": {"why": "load"}}
# Fast retries so fail -> pending -> claim again -> dead-letter all happen within the run.
TASK_DEFAULTS = {"type": "eng", "backoffSeconds": 0.05, "maxRetries": 2}


@dataclass
class Ledger:
    """What clients were told, shared by all threads under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    holders: dict[str, str] = field(default_factory=dict)
    double_holds: list[tuple[str, str, str]] = field(default_factory=list)
    acked: list[tuple[str, str]] = field(default_factory=list)  # (operation, task id)
    claims: int = 0
    errors: Counter = field(default_factory=Counter)

    def claimed(self, task_id: str, agent: str) -> None:
        with self.lock:
            other = self.holders.get(task_id)
            if other is not None:
                self.double_holds.append((task_id, other, agent))
            self.holders[task_id] = agent
            self.claims += 1
            self.acked.append(("claim", task_id))

    def release(self, task_id: str) -> None:
        with self.lock:
            self.holders.pop(task_id, None)

    def ack(self, op: str, task_id: str) -> None:
        with self.lock:
            self.acked.append((op, task_id))

    def error(self, code: str) -> None:
        with self.lock:
            self.errors[code] += 1


class Agent:
    """One client: a random mix of queue operations until told to stop or cut off."""

    def __init__(self, n: int, socket: Path, project: str, ledger: Ledger, round_: int = 0) -> None:
        self.name = f"agent-{n}"
        self.rng = random.Random(n * 1000 + round_)
        self.socket = socket
        self.p = {"project": project}
        self.ledger = ledger
        self.held: list[str] = []
        self.seq = round_ * 100_000  # task ids stay unique across crash rounds

    def run(self, stop: threading.Event) -> None:
        try:
            with Client.connect(self.socket, timeout=60) as c:
                while not stop.is_set():
                    self.step(c)
        except (OSError, EOFError) as exc:  # the daemon was killed: the crash test's point
            self.ledger.error(type(exc).__name__)
        except Exception as exc:
            if type(exc).__name__ not in ("ProtocolError", "NotRunning"):
                raise
            self.ledger.error(type(exc).__name__)

    def step(self, c: Client) -> None:
        roll = self.rng.random()
        try:
            if roll < 0.35 or (not self.held and roll < 0.5):
                self.enqueue(c)
            elif roll < 0.65:
                self.claim(c)
            elif self.held and roll < 0.85:
                self.complete(c)
            elif self.held and roll < 0.95:
                self.fail(c)
            else:
                self.cancel(c)
        except DaemonError as err:
            assert err.code in ("conflict", "not_found"), err  # never internal
            self.ledger.error(err.code)

    def enqueue(self, c: Client) -> None:
        self.seq += 1
        task_id = f"{self.name}-{self.seq}"
        task = {**TASK_DEFAULTS, "id": task_id, "priority": self.rng.randint(1, 10)}
        task["payload"] = {"n": task_id}
        c.call("queue.enqueue", self.p | {"task": task})
        self.ledger.ack("enqueue", task_id)

    def claim(self, c: Client) -> None:
        task = c.call("queue.claim", self.p | {"agent": self.name, "capabilities": ["eng"]})
        if task["task"] is not None:
            self.ledger.claimed(task["task"]["id"], self.name)
            self.held.append(task["task"]["id"])

    def complete(self, c: Client) -> None:
        task_id = self.held.pop()
        self.ledger.release(task_id)
        c.call("queue.complete", self.p | {"id": task_id, "agent": self.name, "result": REPORT})
        self.ledger.ack("complete", task_id)

    def fail(self, c: Client) -> None:
        task_id = self.held.pop()
        self.ledger.release(task_id)
        reply = c.call("queue.fail", self.p | {"id": task_id, "agent": self.name, "error": "no"})
        self.ledger.ack("dead-letter" if reply["state"] == "dead-letter" else "fail", task_id)

    def cancel(self, c: Client) -> None:
        """Cancel one of ours, or a random task of another agent (a pending one, often)."""
        if self.held and self.rng.random() < 0.5:
            task_id = self.held.pop()
            self.ledger.release(task_id)
        else:
            other = self.rng.randrange(CLIENTS)
            task_id = f"agent-{other}-{self.rng.randint(1, 20)}"
        reply = c.call("queue.cancel", self.p | {"id": task_id, "reason": "load"})
        for cancelled in reply["cancelled"]:
            self.ledger.ack("cancel", cancelled)


class Keeper:
    """A subscriber that keeps up: counts queue.* events of the project by topic."""

    def __init__(self, socket: Path, project: str) -> None:
        self.client = Client.connect(socket, timeout=60)
        self.client.call("subscribe", {"topics": ["queue.*"], "project": project})
        self.topics: Counter = Counter()
        self.resyncs = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    event = self.client.next_event(timeout=0.2)
                    if event["topic"] == "resync":
                        self.resyncs += 1
                    self.topics[event["topic"]] += 1

    def close(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.client.close()


def subscriber(socket: Path, project: str, stop: threading.Event) -> None:
    """A client that only watches; it may fall behind (resync is its right, not a failure)."""
    with contextlib.suppress(OSError, EOFError, Exception), Client.connect(socket, timeout=60) as c:
        c.call("subscribe", {"topics": ["queue.*"], "project": project})
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                c.next_event(timeout=0.2)


def run_load(
    lokid: Lokid,
    project: str,
    ledger: Ledger,
    stop: threading.Event,
    round_: int = 0,
    clients: int = CLIENTS,
    subscribers: int = SUBSCRIBERS,
) -> list:
    """Start the clients (200); return their threads (they run until `stop` or a crash)."""
    threads = []
    for n in range(clients):
        if n < subscribers:
            target: Any = lambda: subscriber(lokid.socket, project, stop)  # noqa: E731
        else:
            target = Agent(n, lokid.socket, project, ledger, round_).run
            target = (lambda run: lambda: run(stop))(target)
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        threads.append(thread)
    return threads


# -- invariants --------------------------------------------------------------------------


def all_tasks(lokid: Lokid, project: str) -> dict[str, str]:
    """Every task's id -> state, paged through queue.list per state; an id twice fails."""
    seen: dict[str, str] = {}
    with lokid.client() as c:
        for state in STATES:
            cursor = None
            while True:
                params: dict[str, Any] = {"project": project, "state": state, "limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                page = c.call("queue.list", params)
                for task in page["tasks"]:
                    assert task["id"] not in seen, f"{task['id']} in {seen[task['id']]} and {state}"
                    seen[task["id"]] = state
                cursor = page["cursor"]
                if cursor is None:
                    break
    return seen


def check_database(lokid: Lokid, project: str, ledger: Ledger) -> dict[str, str]:
    tasks = all_tasks(lokid, project)
    stats = lokid.call("queue.stats", {"project": project})["states"]
    assert {s: stats.get(s, 0) for s in STATES} == Counter(tasks.values()) | {
        s: 0 for s in STATES if s not in Counter(tasks.values())
    }
    assert not ledger.double_holds, f"tasks held by two agents: {ledger.double_holds[:5]}"
    for op, task_id in ledger.acked:
        assert task_id in tasks, f"acknowledged {op} of {task_id}, task missing"
        expected = {"complete": "completed", "cancel": "cancelled", "dead-letter": "dead-letter"}
        if op in expected:
            assert tasks[task_id] == expected[op], (op, task_id, tasks[task_id])
    return tasks


def views(project: str) -> dict[str, list[str]]:
    out = {}
    for state in STATES:
        path = Path(project) / ".loki" / "queue" / f"{state}.json"
        try:
            out[state] = [t["id"] for t in json.loads(path.read_bytes())]
        except (FileNotFoundError, json.JSONDecodeError):
            out[state] = []
    return out


def views_differ(project: str, tasks: dict[str, str], keep: int = 500) -> str:
    """How the files differ from the database ('' when they hold each state's ids;
    completed.json holds the newest `keep`)."""
    files = views(project)
    for state in STATES:
        want = {i for i, s in tasks.items() if s == state}
        have = set(files[state])
        if state == "completed" and len(want) > keep:
            if len(have) != keep or not have <= want:
                return f"completed.json: {len(have)} ids, {len(have - want)} not completed"
        elif have != want:
            return (
                f"{state}.json: missing {sorted(want - have)[:5]}, extra {sorted(have - want)[:5]}"
            )
    return ""


def wait_views(project: str, tasks: dict[str, str]) -> None:
    try:
        wait_until(lambda: not views_differ(project, tasks), 30, "the JSON views to settle")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {views_differ(project, tasks)}") from None


# -- the tests ----------------------------------------------------------------------------


@pytest.fixture
def project(project) -> str:
    """A project whose breakers never open: with the default threshold (5) the load's many
    failures would open `eng` after a second and leave the claimers idle for a minute."""
    path = project
    config = path / ".loki" / "config"
    config.mkdir()
    (config / "circuit-breakers.yaml").write_text("defaults: {failureThreshold: 1000000}\n")
    return str(path)


def test_200_clients_mixed_load_keeps_every_invariant(tmp_short, project):
    lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "warning"}).start()
    try:
        keeper = Keeper(lokid.socket, project)
        ledger, stop = Ledger(), threading.Event()
        threads = run_load(lokid, project, ledger, stop)
        time.sleep(LOAD_SECONDS)  # the load's length, not a wait for a condition
        stop.set()
        join_all(threads)
        assert lokid.proc.poll() is None and lokid.call("ping")
        tasks = check_database(lokid, project, ledger)
        assert ledger.claims > 200, f"too little work done to prove anything: {ledger.claims}"
        check_events(keeper, tasks, ledger)
        keeper.close()
        wait_views(project, tasks)
        assert "internal error" not in lokid.log()
    finally:
        lokid.kill()


def check_events(keeper: Keeper, tasks: dict[str, str], ledger: Ledger) -> None:
    """Counts from the event stream match the database (or resync said what was lost)."""
    states = Counter(tasks.values())
    expect = {
        "queue.enqueued": len(tasks),
        "queue.claimed": ledger.claims,
        "queue.completed": states["completed"],
        "queue.cancelled": states["cancelled"],
        "queue.dead-lettered": states["dead-letter"],
    }

    def settled() -> bool:
        return all(keeper.topics[t] == n for t, n in expect.items())

    if keeper.resyncs:  # a gap is allowed only when announced; then the counts are lower bounds
        assert all(keeper.topics[t] <= n for t, n in expect.items())
        return
    wait_until(settled, 30, f"event counts {dict(keeper.topics)} to reach {expect}")


ROUNDS = 3


def test_sigkill_during_load_loses_nothing_acknowledged(tmp_short, project):
    """Kill -9 at a random moment of the 200-client load, restart, check; three times over
    the same database, so each round also recovers what the previous crash left."""
    ledger = Ledger()
    rng = random.Random(9)
    for round_ in range(ROUNDS):
        lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "warning"}).start()
        stop = threading.Event()
        try:
            goal = len(ledger.acked) + 50
            threads = run_load(lokid, project, ledger, stop, round_)
            wait_until(lambda: len(ledger.acked) > goal, 60, "the load to get going")  # noqa: B023
            time.sleep(rng.uniform(0.5, 4.0))  # a random moment of the load: the point of it
            lokid.proc.send_signal(signal.SIGKILL)
            lokid.proc.wait(10)
            stop.set()
            join_all(threads)
        finally:
            lokid.kill()
        restarted = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "warning"}).start()
        try:
            tasks = check_database(restarted, project, ledger)
            wait_views(project, tasks)  # also past any view lock the kill left (bug 7)
            assert "internal error" not in restarted.log()
        finally:
            restarted.kill()
    assert len(ledger.acked) > ROUNDS * 50


def test_a_cancel_by_another_client_during_load_is_never_internal(tmp_short, project):
    """Cancel a parent with dependants while agents hold some of them."""
    lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "warning"}).start()
    try:
        p = {"project": project}
        lokid.call("queue.enqueue", p | {"task": {"id": "root", "type": "eng"}})
        deps = [
            {"id": f"d{i}", "type": "eng", "payload": {"i": i}, "dependencies": ["root"]}
            for i in range(50)
        ]
        lokid.call("queue.enqueue_many", p | {"tasks": deps})
        agent = {"agent": "a", "capabilities": ["eng"]}
        assert lokid.call("queue.claim", p | agent)["task"]["id"] == "root"
        cancelled = lokid.call("queue.cancel", p | {"id": "root"})["cancelled"]
        assert cancelled[0] == "root" and len(cancelled) == 51
        with pytest.raises(DaemonError) as err:
            lokid.call("queue.complete", p | {"id": "root", "agent": "a", "result": REPORT})
        assert err.value.code == "conflict"
    finally:
        lokid.kill()


def test_a_burst_of_200_connects_all_get_in(tmp_short):
    """Bug 4 (fixed in 8ea953e): over 128 connects at once used to fail with EAGAIN."""
    lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "warning"}).start()
    failures: list[str] = []
    go = threading.Barrier(CLIENTS)

    def one() -> None:
        go.wait()
        try:
            with Client.connect(lokid.socket, timeout=60) as c:
                c.call("ping")
        except Exception as exc:
            failures.append(repr(exc))

    try:
        threads = [threading.Thread(target=one) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        join_all(threads)
        assert not failures, f"{len(failures)} of {CLIENTS} failed: {failures[:3]}"
    finally:
        lokid.kill()


def dead_pid() -> int:
    """The pid of a process that has exited (what a SIGKILLed lokid leaves in owner.pid)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_lock_left_by_a_killed_lokid_does_not_kill_the_next(tmp_short, project):
    """What SIGKILL during a view write leaves behind: the mkdir lock with the dead pid.

    Bug 7 (fixed in 25f66be): the restart waited 30 s to break it, and the watcher's import
    timed out on it and ended lokid."""
    first = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "info"}).start()
    task = {"id": "a", "type": "eng", "payload": {"n": "a"}}
    first.call("queue.enqueue", {"project": project, "task": task})
    queue = Path(project) / ".loki" / "queue"
    wait_until(lambda: (queue / "pending.json").exists(), 20, "the first views")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    lockdir = queue / ".pending.lock.lockdir"
    lockdir.mkdir(exist_ok=True)
    (lockdir / "owner.pid").write_text(f"{dead_pid()}\n")
    (queue / "pending.json").write_text("[]")  # changed since: the restart must look at it
    second = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "info"}).start()
    try:
        task = {"id": "b", "type": "eng", "payload": {"n": "b"}}
        second.call("queue.enqueue", {"project": project, "task": task})
        tasks = {"a": "pending", "b": "pending"}
        wait_until(lambda: not views_differ(project, tasks), 10, "views written past the lock")
        time.sleep(6)  # past the 5 s lock timeout that used to end the daemon
        assert second.proc.poll() is None, second.log()[-3000:]
    finally:
        second.kill()


BATCH = 2000


def batches(
    socket: Path, project: str, acked: list[int], stop: threading.Event, first: int
) -> None:
    """enqueue_many of BATCH tasks over and over; the batch numbers acknowledged go in `acked`."""
    with contextlib.suppress(Exception), Client.connect(socket, timeout=60) as c:
        for n in range(first, first + 10**6):
            if stop.is_set():
                return
            tasks = [
                {"id": f"b{n}-{i}", "type": "bulk", "payload": {"b": n, "i": i}}
                for i in range(BATCH)
            ]
            c.call("queue.enqueue_many", {"project": project, "tasks": tasks})
            acked.append(n)


def test_sigkill_during_enqueue_many_is_all_or_nothing(tmp_short, project):
    """A batch is one transaction: after a kill each batch is whole or absent, never partial."""
    rng = random.Random(7)
    acked: list[int] = []
    for round_ in range(ROUNDS):
        lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "warning"}).start()
        stop = threading.Event()
        before = len(acked)
        args = (lokid.socket, project, acked, stop, round_ * 10**6)
        thread = threading.Thread(target=batches, args=args)
        thread.start()
        wait_until(lambda: len(acked) > before, 60, "a first batch")  # noqa: B023
        time.sleep(rng.uniform(0.05, 1.0))
        lokid.proc.send_signal(signal.SIGKILL)
        lokid.proc.wait(10)
        stop.set()
        thread.join(30)
    restarted = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "warning"}).start()
    try:
        sizes = Counter(task_id.split("-")[0] for task_id in all_tasks(restarted, project))
        assert all(size == BATCH for size in sizes.values()), {
            b: n for b, n in sizes.items() if n != BATCH
        }
        assert all(f"b{n}" in sizes for n in acked), "an acknowledged batch is missing"
        assert len(acked) >= ROUNDS
    finally:
        restarted.kill()


def test_a_50k_story_pending_json_is_imported_while_others_are_served(tmp_short, project):
    """Loki Mode's populate writes a huge pending.json: lokid imports it in chunks (each its
    own transaction), so the agents and a bystander are served between them, and every
    story is imported exactly once."""
    from test_reliability_support import Bystander

    stories = [
        {"id": f"prd-{n:05d}", "title": f"story {n}", "priority": "medium", "status": "pending"}
        for n in range(50_000)
    ]
    lokid = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "warning"}).start()
    try:
        lokid.call("project.add", {"path": project})
        ledger, stop = Ledger(), threading.Event()
        with Bystander(lokid.socket) as bystander:
            threads = run_load(lokid, project, ledger, stop, clients=8, subscribers=1)
            queue = Path(project) / ".loki" / "queue"
            queue.mkdir(exist_ok=True)
            tmp = queue / "pending.json.tmp"
            tmp.write_text(json.dumps(stories))
            tmp.replace(queue / "pending.json")

            def imported() -> bool:
                page = lokid.call("queue.stats", {"project": project})
                return sum(page["types"].get("general", {}).values()) == len(stories)

            wait_until(imported, 120, "every story imported")
            stop.set()
            join_all(threads)
        assert not bystander.failures, bystander.failures
        assert bystander.worst < 2.0, f"a ping waited {bystander.worst:.2f} s behind the import"
        tasks = check_database(lokid, project, ledger)
        assert sum(1 for i in tasks if i.startswith("prd-")) == len(stories)
    finally:
        lokid.kill()
