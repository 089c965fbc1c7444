"""Many lokid instances, one queue in PostgreSQL: claims, leases, breakers, idempotency,
dependencies and events across instances, under load and through faults."""

from __future__ import annotations

import random
import signal
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from pgenv import start_cluster
from shared_support import (
    REPORT,
    Instance,
    Ledger,
    database_ids,
    is_retryable,
    start_instances,
    stop_instances,
    views_equal_database,
)

from lokictl import Client, DaemonError
from lokid.wire.times import parse_iso
from support import join_all, wait_until

BREAKERS_OFF = "defaults: {failureThreshold: 100000}\n"


@pytest.fixture
def three(tmp_short, pg_url):
    instances = start_instances(tmp_short, pg_url, 3, BREAKERS_OFF)
    yield instances
    stop_instances(instances)


def agent(
    name: str,
    instances: list[Instance],
    first: int,
    ledger: Ledger,
    done: threading.Event,
    fail_every: int = 0,
    lease: float | None = None,
    dies_with: int | None = None,
) -> None:
    """Claims and completes (with claimNext) until `done`; moves to the next instance when
    its own goes away, and carries on with the lease it holds (the lease is in the database),
    unless it lives on that instance's host (`dies_with`): then it dies with it."""
    rng = random.Random(name)
    at = first
    client: Client | None = None
    task = None
    while not done.is_set():
        instance = instances[at % len(instances)]
        try:
            if client is None:
                client = instance.client()
            params = {"project": str(instance.project), "agent": name}
            if task is None:
                claim = {**params, "capabilities": ["eng"], "lease": lease}
                task = client.call("queue.claim", claim)["task"]
                if task is None:
                    time.sleep(0.01)
                    continue
            then = {"capabilities": ["eng"], "lease": lease}
            if fail_every and rng.randrange(fail_every) == 0:
                reply = client.call(
                    "queue.fail",
                    {**params, "id": task["id"], "error": "flaky", "claimNext": then},
                )
                with ledger.lock:
                    ledger.failed.append((task["id"], name))
            else:
                reply = client.call(
                    "queue.complete",
                    {**params, "id": task["id"], "result": REPORT, "claimNext": then},
                )
                ledger.ack(task["id"], name)
            task = reply["next"]["task"]
        except DaemonError as exc:
            if exc.code == "conflict" and task is not None:
                task = None  # an outcome we were not told of happened, or the lease ran out
            elif not is_retryable(exc):
                with ledger.lock:
                    ledger.problems.append(f"{name}: {exc}")
                return
            time.sleep(0.05)
        except Exception as exc:
            if not is_retryable(exc):
                with ledger.lock:
                    ledger.problems.append(f"{name}: {exc!r}")
                return
            if dies_with == at % len(instances):
                return
            if client is not None:
                client.close()
            client, at = None, at + 1  # that lokid is gone: use the next one
            time.sleep(0.05)
    if client is not None:
        client.close()


def run_agents(instances, n_agents, ledger, done, **kw) -> list[threading.Thread]:
    """Agent i starts on instance i % n."""
    threads = [
        threading.Thread(target=agent, args=(f"a{i}", instances, i, ledger, done), kwargs=kw)
        for i in range(n_agents)
    ]
    for thread in threads:
        thread.start()
    return threads


def enqueue(instance: Instance, n: int, **extra) -> list[str]:
    tasks = [{"type": "eng", "payload": {"n": i, **extra}, "maxRetries": 50,
              "backoffSeconds": 0.05} for i in range(n)]  # fmt: skip
    return [r["id"] for r in instance.call("queue.enqueue_many", tasks=tasks)["results"]]


def all_completed(instance: Instance, n: int) -> bool:
    try:
        return instance.call("queue.stats")["states"]["completed"] == n
    except DaemonError as exc:
        if exc.code != "unavailable":
            raise
        return False  # the database is (still) away


def follow(instance: Instance, topics: list[str]) -> tuple[Client, list[dict]]:
    """A subscriber on `instance`, its events collected by a thread as they come."""
    client = instance.client()
    client.call("subscribe", {"topics": topics, "project": str(instance.project)})
    seen: list[dict] = []

    def read() -> None:
        try:
            for event in client.events():
                seen.append(event)
        except Exception:
            return

    threading.Thread(target=read, daemon=True).start()
    return client, seen


def test_three_instances_thirty_agents(three):
    """Never two holders, every acknowledged completion in the database, every instance's
    subscribers see the same events in the same order, and every instance's views equal
    the database once the load is over."""
    followers = [follow(i, ["queue.*"]) for i in three]
    ids = enqueue(three[0], 150) + enqueue(three[1], 150, b=1)
    ledger, done = Ledger(), threading.Event()
    threads = run_agents(three, 30, ledger, done, fail_every=10)
    wait_until(lambda: len(ledger.completed) == len(ids) or ledger.problems, 120, "all done")
    done.set()
    join_all(threads)
    assert ledger.problems == []
    assert sorted(ledger.completed) == sorted(ids)
    truth = database_ids(three[2])
    assert sorted(truth["completed"]) == sorted(ids)
    wait_until(lambda: views_equal_database(three), 30, "every instance's views")
    expected = 3 * len(ids) + 2 * len(ledger.failed)  # enqueued, claimed, completed, retrying
    for client, seen in followers:
        wait_until(lambda seen=seen: len(seen) >= expected, 30, "every event everywhere")
        client.close()
    orders = [[(e["topic"], e["data"].get("id")) for e in seen] for _, seen in followers]
    assert orders[0] == orders[1] == orders[2], "one order per project, on every instance"
    completed = [d for t, d in orders[0] if t == "queue.completed"]
    assert sorted(completed) == sorted(ids)


def test_sigkill_of_an_instance_under_load_loses_nothing(tmp_short, pg_url):
    """A host dies: its lokid is killed and its agents with it. The tasks they held come
    back when their leases run out, each expired exactly once by one of the survivors, and
    the agents elsewhere finish the queue; nothing acknowledged is lost."""
    instances = start_instances(tmp_short, pg_url, 3, BREAKERS_OFF)
    try:
        client, expired = follow(instances[0], ["queue.lease-expired"])
        ids = enqueue(instances[0], 240)
        ledger, done = Ledger(), threading.Event()
        threads = run_agents(instances, 30, ledger, done, lease=1.5, dies_with=1)
        wait_until(lambda: len(ledger.completed) >= 60, 60, "the load to be under way")
        instances[1].lokid.proc.send_signal(signal.SIGKILL)
        instances[1].lokid.proc.wait(10)
        survivors = [instances[0], instances[2]]
        # (a completion the dead lokid committed but never acknowledged is in the database
        # and not in the ledger: wait on the database)
        wait_until(lambda: all_completed(survivors[0], len(ids)) or ledger.problems, 120, "all")
        done.set()
        join_all(threads)
        assert ledger.problems == []
        truth = database_ids(survivors[0])
        assert sorted(truth["completed"]) == sorted(ids)
        assert set(ledger.completed) <= set(truth["completed"])
        assert truth["in-progress"] == [] and truth["pending"] == []
        wait_until(lambda: views_equal_database(survivors), 30, "the survivors' views")
        swept = Counter(e["data"]["id"] for e in expired)
        client.close()
        assert swept, "the dead host's agents held tasks; their leases ran out"
        assert set(swept.values()) == {1}, "each lease expired once, by one instance"
    finally:
        stop_instances(instances)


def test_the_database_stopped_and_started_under_load(tmp_short):
    """Operations fail `unavailable` (naming the server) while it is down; lokid stays up,
    reconnects by itself, resyncs its subscribers and views, and nothing acknowledged is
    lost."""
    cluster = start_cluster("lkpgf")
    try:
        url = cluster.create_db("faults")
        instances = start_instances(tmp_short, url, 2, BREAKERS_OFF)
        try:
            client, seen = follow(instances[1], ["queue.resync"])
            ids = enqueue(instances[0], 200)
            ledger, done = Ledger(), threading.Event()
            threads = run_agents(instances, 10, ledger, done, lease=5)
            wait_until(lambda: len(ledger.completed) >= 40, 60, "the load to be under way")
            cluster.stop("fast")
            with pytest.raises(DaemonError) as down:
                instances[0].call("queue.stats")
            assert down.value.code == "unavailable"
            assert f":{cluster.port}/faults" in down.value.message
            assert instances[0].lokid.call("ping")  # lokid itself still answers
            cluster.start()
            wait_until(lambda: all_completed(instances[0], len(ids)) or ledger.problems, 120, "all")
            done.set()
            join_all(threads)
            assert ledger.problems == []
            truth = database_ids(instances[0])
            assert sorted(truth["completed"]) == sorted(ids)
            assert set(ledger.completed) <= set(truth["completed"])
            wait_until(lambda: seen, 10, "queue.resync after the reconnect")
            client.close()
            wait_until(lambda: views_equal_database(instances), 30, "views after the outage")
        finally:
            stop_instances(instances)
    finally:
        cluster.close()


def test_events_reach_subscribers_of_other_instances_fast(tmp_short, pg_url):
    a, b = start_instances(tmp_short, pg_url, 2)
    try:
        client, seen = follow(a, ["queue.completed"])
        ids = enqueue(b, 40)
        latencies = []
        for task_id in ids:
            b.call("queue.claim", agent="w", capabilities=["eng"])
            start = time.perf_counter()
            b.call("queue.complete", id=task_id, agent="w", result=REPORT)
            wait_until(lambda task_id=task_id: any(
                e["data"]["id"] == task_id for e in seen), 5, "the event on A")  # fmt: skip
            latencies.append(time.perf_counter() - start)
        client.close()
        assert [e["data"]["id"] for e in seen] == ids
        assert statistics.median(latencies) < 0.020, latencies
    finally:
        stop_instances([a, b])


BREAKERS = "defaults: {failureThreshold: 2, halfOpenAfter: 1, halfOpenRequests: 2}\n"


def test_breakers_and_probe_reservations_are_shared(tmp_short, pg_url):
    """Opened through one instance, the breaker blocks claims on the others; half-open, it
    gives exactly its two probes to twelve concurrent claimers on three instances, once."""
    instances = start_instances(tmp_short, pg_url, 3, BREAKERS)
    try:
        a, b, c = instances
        for instance in (a, b):  # one failure through each: two in all open it
            task_id = enqueue(instance, 1, who=str(instance.project))[0]
            instance.call("queue.claim", agent="x", capabilities=["eng"])
            instance.call("queue.fail", id=task_id, agent="x", error="crash")
        blocked = c.call("queue.claim", agent="y", capabilities=["eng"])
        assert blocked["task"] is None and blocked["blocked"]["eng"]["state"] == "open"
        enqueue(c, 12, more=1)
        wait_until(lambda: c.call("breaker.list")["breakers"]["eng"]["state"] == "half-open", 10)
        results: list = []
        barrier = threading.Barrier(12)

        def claimer(i: int) -> None:
            instance = instances[i % 3]
            with instance.client() as client:
                barrier.wait()
                results.append(
                    client.call("queue.claim", {"project": str(instance.project),
                                                "agent": f"p{i}", "capabilities": ["eng"]})
                )  # fmt: skip

        threads = [threading.Thread(target=claimer, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        join_all(threads)
        assert sum(r["task"] is not None for r in results) == 2
    finally:
        stop_instances(instances)


def test_idempotency_keys_dependencies_and_cascades_across_instances(three):
    a, b, c = three
    results: list = []

    def enqueue_same(instance: Instance) -> None:
        results.append(instance.call("queue.enqueue", task={"type": "eng", "payload": {"k": 1}}))

    threads = [threading.Thread(target=enqueue_same, args=(three[i % 3],)) for i in range(15)]
    for thread in threads:
        thread.start()
    join_all(threads)
    assert len({r["id"] for r in results}) == 1
    assert sum(not r["duplicate"] for r in results) == 1
    # dependency gating: the child, enqueued through B, waits for a parent completed via C
    parent = a.call("queue.enqueue", task={"type": "dep", "payload": {"p": 1}})["id"]
    waiting = {"type": "dep", "payload": {"c": 1}, "dependencies": [parent], "priority": 10}
    child = b.call("queue.enqueue", task=waiting)["id"]
    assert c.call("queue.claim", agent="w", capabilities=["dep"])["task"]["id"] == parent
    assert a.call("queue.claim", agent="v", capabilities=["dep"])["task"] is None
    c.call("queue.complete", id=parent, agent="w", result=REPORT)
    assert a.call("queue.claim", agent="v", capabilities=["dep"])["task"]["id"] == child
    # cascading cancel: root via A, its dependents via B and C, cancelled through B
    client, seen = follow(a, ["queue.cancelled"])
    root = a.call("queue.enqueue", task={"type": "tree", "payload": {"r": 1}})["id"]
    mid = b.call("queue.enqueue", task={"type": "tree", "payload": {"m": 1},
                                        "dependencies": [root]})["id"]  # fmt: skip
    leaf = c.call("queue.enqueue", task={"type": "tree", "payload": {"l": 1},
                                         "dependencies": [mid]})["id"]  # fmt: skip
    assert b.call("queue.cancel", id=root, reason="plans changed")["cancelled"] == [root, mid, leaf]
    wait_until(lambda: len(seen) == 3, 10, "the cancellations on A")
    client.close()
    assert c.call("queue.get", id=leaf)["state"] == "cancelled"


def test_leases_use_the_databases_clock(tmp_short, pg_url):
    """A lokid whose host clock is an hour behind (libfaketime) hands out leases that end
    when the database says, so another instance does not expire them at once."""
    lib = next(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"), None)
    if lib is None:
        pytest.skip("libfaketime is not installed (scripts/install-system-deps.sh)")
    behind = {"LD_PRELOAD": str(lib), "FAKETIME": "-1h", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    fine, skewed = start_instances(tmp_short, pg_url, 2, each=[{}, behind])
    try:
        host_time = parse_iso(skewed.lokid.call("ping")["time"])
        assert time.time() - host_time > 3000, "the skewed lokid's host clock is behind"
        task = {"type": "eng", "payload": {}, "timeout": 30}
        task_id = fine.call("queue.enqueue", task=task)["id"]
        claimed = skewed.call("queue.claim", agent="w", capabilities=["eng"])["task"]
        assert claimed["id"] == task_id
        until = skewed.call("queue.heartbeat", id=task_id, agent="w", lease=30)["leaseUntil"]
        assert abs(parse_iso(until) - (time.time() + 30)) < 5, until
        assert fine.call("queue.get", id=task_id)["state"] == "in-progress"
    finally:
        stop_instances([fine, skewed])
