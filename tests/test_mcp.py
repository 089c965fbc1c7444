"""`lokid mcp` through the official SDK's own client, over stdio, against a real lokid.

Each test starts `lokid mcp` as an MCP client does (a subprocess whose stdin/stdout carry
JSON-RPC) on the fixture lokid's private socket, and checks what an agent sees: tools and
their schemas, results, error results, resources and their update notifications.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from mcp import Client, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated

from lokictl import Client as LokidClient
from lokid.mcp import resources
from lokid.mcp.tools import TOOLS
from lokid.wire import queue as wire_queue
from support import Lokid, no_engine

pytestmark = pytest.mark.anyio

PENDING = "lokid://queue/pending"
STATUS = "lokid://project/status"
DROP_INS = [
    "loki_task_queue_list",
    "loki_task_queue_add",
    "loki_task_queue_update",
    "loki_complete_task",
    "loki_project_status",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def project(tmp_short) -> Path:
    path = tmp_short / "proj"
    (path / ".loki").mkdir(parents=True)
    return path


def bridge_env(root: Path) -> dict[str, str]:
    """A private state and config home: a spawned lokid logs there, and no installed
    socket unit of the machine's user is ever asked to start."""
    return {
        "XDG_STATE_HOME": str(root / "bridge-state"),
        "XDG_CONFIG_HOME": str(root / "bridge-config"),
        "XDG_RUNTIME_DIR": str(root / "bridge-run"),
    }


@asynccontextmanager
async def bridge(
    socket: Path, cwd: Path, *args: str, mode: str = "auto", **client: Any
) -> AsyncIterator[Client]:
    """`lokid mcp` started by the SDK's stdio client in `cwd`, as an agent's client does."""
    root = socket.parent.parent
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "lokid", "mcp", "--socket", str(socket), *args],
        cwd=str(cwd),
        env=bridge_env(root),
    )
    with (root / "bridge.log").open("a") as errlog:
        transport = stdio_client(params, errlog=errlog)
        async with Client(transport, mode=mode, **client) as session:
            yield session


async def tool(session: Client, name: str, **arguments: Any) -> Any:
    """Call a tool that must succeed; its structured result."""
    result = await session.call_tool(name, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def tool_error(session: Client, name: str, **arguments: Any) -> str:
    """Call a tool that must fail; its error text."""
    result = await session.call_tool(name, arguments)
    assert result.is_error, result.structured_content
    return result.content[0].text


async def dropin(session: Client, name: str, error: bool = False, **arguments: Any) -> Any:
    """A Loki Mode tool: its JSON text, also the structured {"result": text}."""
    result = await session.call_tool(name, arguments)
    assert result.is_error is error, result.content[0].text
    assert result.structured_content == {"result": result.content[0].text}
    return json.loads(result.content[0].text)


def direct(lokid: Lokid, method: str, project: Path, **params: Any) -> Any:
    return lokid.call(method, {"project": str(project), **params})


# -- tools -----------------------------------------------------------------------------------


async def test_tools_list_every_tool_with_schemas_from_the_wire(lokid, project):
    async with bridge(lokid.socket, project) as session:
        listed = {t.name: t for t in (await session.list_tools()).tools}
    assert set(listed) == set(TOOLS) | set(DROP_INS)
    assert len(TOOLS) == 20
    for name, spec in TOOLS.items():
        schema = listed[name].input_schema
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        wire = {f.encode_name for f in msgspec.structs.fields(spec.params)}
        assert set(schema["properties"]) == wire - set(spec.omit), name
        assert "project" not in schema.get("required", []), name
        assert "agent" not in schema.get("required", []), name
        assert listed[name].output_schema["type"] == "object", name
    claim = listed["queue_claim"].input_schema
    assert claim["required"] == ["capabilities"]
    assert claim["properties"]["lease"]["anyOf"][0]["exclusiveMinimum"] == 0
    assert "heartbeat" in listed["queue_claim"].description
    complete = listed["queue_complete"].input_schema
    assert complete["$defs"]["TaskResult"]["required"] == ["decisionReport"]
    out = listed["queue_get"].output_schema
    assert set(out["$defs"]["Task"]["properties"]) >= wire_queue.TASK_FIELDS
    add = listed["loki_task_queue_add"].input_schema
    assert add["required"] == ["title", "description"]
    assert add["properties"]["priority"]["default"] == "medium"
    assert listed["loki_task_queue_list"].output_schema["required"] == ["result"]


async def test_an_agent_works_a_lease(lokid, project):
    async with bridge(lokid.socket, project, "--agent", "a1") as session:
        added = await tool(session, "queue_enqueue", task={"type": "eng", "priority": "high"})
        assert added["duplicate"] is False
        claimed = await tool(session, "queue_claim", capabilities=["eng"], lease=30)
        task = claimed["task"]
        assert task["id"] == added["id"] and task["claimedBy"] == "a1" and task["priority"] == 8
        beat = await tool(session, "queue_heartbeat", id=task["id"], lease=60)
        assert beat["leaseUntil"] > task["claimedAt"]
        empty = await tool_error(
            session, "queue_complete", id=task["id"], result={"decisionReport": ""}
        )
        assert empty.startswith("invalid_params: ") and "decisionReport" in empty
        assert direct(lokid, "queue.get", project, id=task["id"])["state"] == "in-progress"
        done = await tool(
            session, "queue_complete", id=task["id"], result={"decisionReport": "tests pass"}
        )
        assert done["state"] == "completed"
        assert done["task"]["result"]["decisionReport"] == "tests pass"
        again = await tool_error(
            session, "queue_complete", id=task["id"], result={"decisionReport": "x"}
        )
        assert again.startswith("conflict: ") and "not in progress" in again
        nothing = await tool(session, "queue_claim", capabilities=["eng"])
        assert nothing == {"task": None}


async def test_fail_detects_rate_limits_and_claim_next_chains(lokid, project):
    async with bridge(lokid.socket, project) as session:
        two = [{"type": "eng", "payload": {"n": n}} for n in (1, 2)]
        await tool(session, "queue_enqueue_many", tasks=two)
        first = (await tool(session, "queue_claim", capabilities=["eng"]))["task"]
        limited = await tool(
            session, "queue_fail", id=first["id"], error="HTTP 429 Too Many Requests",
            claimNext={"capabilities": ["eng"]},
        )  # fmt: skip
        assert limited["state"] == "pending" and limited["task"]["retries"] == 0
        assert limited["task"]["availableAt"] is not None
        second = limited["next"]["task"]
        assert second["id"] != first["id"]
        failed = await tool(session, "queue_fail", id=second["id"], error="tests broke")
        assert failed["state"] == "pending" and failed["task"]["retries"] == 1
        assert failed["task"]["lastError"] == "tests broke"


async def test_enqueue_get_list_stats(lokid, project):
    async with bridge(lokid.socket, project) as session:
        made = await tool(
            session, "queue_enqueue_many",
            tasks=[{"type": "eng", "payload": {"n": i}, "title": f"t{i}"} for i in range(5)],
        )  # fmt: skip
        ids = [r["id"] for r in made["results"]]
        again = await tool(session, "queue_enqueue", task={"type": "eng", "payload": {"n": 0}})
        assert again == {"id": ids[0], "duplicate": True}
        got = await tool(session, "queue_get", id=ids[2])
        assert got["state"] == "pending" and got["task"]["title"] == "t2"
        page = await tool(session, "queue_list", state="pending", limit=3)
        rest = await tool(session, "queue_list", state="pending", cursor=page["cursor"])
        assert [t["id"] for t in page["tasks"] + rest["tasks"]] == ids
        assert rest["cursor"] is None
        stats = await tool(session, "queue_stats")
        assert stats["states"]["pending"] == 5 and stats["types"] == {"eng": {"pending": 5}}
        missing = await tool_error(session, "queue_get", id="no-such-task")
        assert missing.startswith("not_found: ")
        bad = await tool_error(session, "queue_claim", capabilities=["eng"], lease=-1)
        assert bad.startswith("invalid_params: ") and "lease" in bad
        typo = await tool_error(session, "queue_stats", projct="x")
        assert typo.startswith("invalid_params: ") and "projct" in typo
        with pytest.raises(MCPError, match="unknown tool: queue_steal"):
            await session.call_tool("queue_steal", {})


async def test_dead_letters_breakers_and_the_project(lokid, project):
    async with bridge(lokid.socket, project) as session:
        made = await tool(session, "queue_enqueue", task={"type": "ops", "maxRetries": 1})
        await tool(session, "queue_claim", capabilities=["ops"])
        dead = await tool(session, "queue_fail", id=made["id"], error="disk full")
        assert dead["state"] == "dead-letter"
        assert [t["id"] for t in (await tool(session, "dlq_list"))["tasks"]] == [made["id"]]
        breakers = await tool(session, "breakers_list")
        assert breakers["breakers"]["ops"]["failures"] == 1
        retried = await tool(session, "dlq_retry", id=made["id"], note="disk cleaned")
        assert retried == {"id": made["id"], "action": "retry"}
        log = next((project / ".loki" / "logs" / "decisions").glob("dlq-review-*.md"))
        assert "disk cleaned" in log.read_text()
        await tool(session, "queue_claim", capabilities=["ops"])
        await tool(session, "queue_fail", id=made["id"], error="disk full again")
        deleted = await tool(session, "dlq_delete", id=made["id"], note="obsolete")
        assert deleted["action"] == "delete"
        assert (await tool(session, "dlq_list"))["tasks"] == []

        paused = await tool(session, "project_pause")
        assert paused["paused"] is True and "perpetual mode" in paused["note"]
        assert (project / ".loki" / "PAUSE").exists()
        await tool(session, "queue_enqueue", task={"type": "eng"})
        assert (await tool(session, "queue_claim", capabilities=["eng"]))["paused"] is True
        status = await tool(session, "project_status")
        assert status["paused"] is True and status["path"] == str(project)
        assert status["queue"]["pending"] == 1
        resumed = await tool(session, "project_resume")
        assert resumed["paused"] is False and "PAUSE" in resumed["cleared"]
        assert not (project / ".loki" / "PAUSE").exists()


async def test_run_tools_answer_lokids_unavailable_engine(tmp_short, project):
    daemon = Lokid(tmp_short, env=no_engine(tmp_short)).start()
    try:
        async with bridge(daemon.socket, project) as session:
            for name, args in [
                ("run_start", {"pull": False}),
                ("run_stop", {}),
                ("run_status", {}),
                ("run_logs", {"tail": 5}),
            ]:
                text = await tool_error(session, name, **args)
                assert text.startswith("unavailable: ") and "no-docker.sock" in text, text
            refused = await tool_error(session, "run_logs", follow=True)
            assert refused == "invalid_params: run_logs does not take follow"
    finally:
        daemon.kill()


def test_lokictl_and_lokid_help_never_import_the_sdk():
    code = (
        "import sys, lokictl.cli, lokid.cli; lokid.cli._parser(); "
        "assert 'mcp' not in sys.modules and 'pydantic' not in sys.modules, 'SDK imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- project and daemon errors -----------------------------------------------------------------


async def test_outside_a_project_tools_say_how_to_fix_it(lokid, tmp_short, project):
    outside = tmp_short / "elsewhere"
    outside.mkdir()
    async with bridge(lokid.socket, outside) as session:
        text = await tool_error(session, "queue_stats")
        assert text.startswith("invalid_params: no project: ") and "--project" in text
        with pytest.raises(MCPError, match="no project"):
            await session.read_resource(PENDING)
        status = await dropin(session, "loki_project_status")
        assert status["status"] == "no_project"
        named = await tool(session, "queue_stats", project="../proj")
        assert named["states"]["pending"] == 0
    async with bridge(lokid.socket, outside, "--project", str(project)) as session:
        assert (await tool(session, "queue_enqueue", task={}))["duplicate"] is False
    sub = project / "src" / "deep"
    sub.mkdir(parents=True)
    async with bridge(lokid.socket, sub) as session:
        assert (await tool(session, "queue_stats"))["states"]["pending"] == 1


async def test_lokid_not_running_with_spawn_off_is_a_clear_error(tmp_short, project):
    socket = tmp_short / "run" / "lokid.sock"
    start = time.monotonic()
    with anyio.fail_after(60):
        async with bridge(socket, project, "--no-spawn") as session:
            text = await tool_error(session, "queue_claim", capabilities=["eng"])
            listed = await dropin(session, "loki_task_queue_list", error=True)
            with pytest.raises(MCPError, match="not running"):
                await session.read_resource(STATUS)
    assert text.startswith(f"unavailable: lokid is not running on {socket}")
    assert "--no-spawn" in text and "lokid serve" in text
    assert listed["tasks"] == [] and listed["error"] == text
    assert time.monotonic() - start < 30
    assert not socket.exists()


async def test_spawns_lokid_on_demand(tmp_short, project):
    socket = tmp_short / "run" / "lokid.sock"
    try:
        async with bridge(socket, project) as session:
            stats = await tool(session, "queue_stats")
        assert stats["states"]["pending"] == 0
    finally:
        with LokidClient.connect(socket) as c:
            c.call("daemon.shutdown")
    log = tmp_short / "bridge-state" / "lokid" / "lokid.log"
    assert log.exists(), "the spawned lokid logs where lokictl's does"


async def test_a_client_that_goes_away_releases_nothing(lokid, project):
    async with bridge(lokid.socket, project, "--agent", "gone") as session:
        made = await tool(session, "queue_enqueue", task={"type": "eng"})
        await tool(session, "queue_claim", capabilities=["eng"], lease=600)
    held = direct(lokid, "queue.get", project, id=made["id"])
    assert held["state"] == "in-progress" and held["task"]["claimedBy"] == "gone"


# -- two agents ------------------------------------------------------------------------------


async def test_two_agents_through_two_servers_never_hold_the_same_task(lokid, project):
    count = 80
    tasks = [{"type": "eng", "payload": {"n": i}} for i in range(count)]
    direct(lokid, "queue.enqueue_many", project, tasks=tasks)
    held: dict[str, list[str]] = {}

    async def worker(session: Client, agent: str) -> None:
        while True:
            got = await tool(session, "queue_claim", capabilities=["eng"], lease=600)
            if got["task"] is None:
                return
            assert got["task"]["claimedBy"] == agent
            held.setdefault(got["task"]["id"], []).append(agent)

    async with (
        bridge(lokid.socket, project, "--agent", "left") as left,
        bridge(lokid.socket, project, "--agent", "right") as right,
        anyio.create_task_group() as tg,
    ):
        for _ in range(4):  # concurrent calls through each server, too
            tg.start_soon(worker, left, "left")
            tg.start_soon(worker, right, "right")
    assert len(held) == count
    assert all(len(agents) == 1 for agents in held.values()), held
    assert {a for agents in held.values() for a in agents} == {"left", "right"}
    for task_id, agents in held.items():
        got = direct(lokid, "queue.get", project, id=task_id)
        assert got["task"]["claimedBy"] == agents[0]


# -- Loki Mode's tool names ----------------------------------------------------------------------


async def test_loki_mode_task_tools_backed_by_the_queue(lokid, project):
    async with bridge(lokid.socket, project, "--agent", "lm") as session:
        bad = await dropin(session, "loki_task_queue_add", True, title="t", description="d",
                           priority="urgent")  # fmt: skip
        choices = "priority must be one of: critical, high, low, medium"
        assert bad == {"success": False, "error": choices}
        added = await dropin(session, "loki_task_queue_add", title="Login", description="OAuth",
                             priority="critical", phase="testing")  # fmt: skip
        assert added["success"] is True
        task_id = added["task_id"]
        stored = direct(lokid, "queue.get", project, id=task_id)["task"]
        assert stored["priority"] == 10 and stored["type"] == "general"
        extras = (stored["title"], stored["description"], stored["phase"])
        assert extras == ("Login", "OAuth", "testing")

        listed = await dropin(session, "loki_task_queue_list")
        assert listed["tasks"] == [
            {"id": task_id, "title": "Login", "description": "OAuth", "priority": "critical",
             "phase": "testing", "status": "pending", "created_at": stored["createdAt"],
             "type": "general", "state": "pending"}
        ]  # fmt: skip

        refused = await dropin(session, "loki_task_queue_update", True, task_id=task_id,
                               status="in_progress")  # fmt: skip
        assert refused["success"] is False and "queue_claim" in refused["error"]
        moved = await dropin(session, "loki_task_queue_update", True, task_id=task_id,
                             priority="low")  # fmt: skip
        assert "cannot change" in moved["error"]
        unknown = await dropin(session, "loki_task_queue_update", True, task_id="nope",
                               status="completed")  # fmt: skip
        assert unknown == {"success": False, "error": "Task nope not found"}

        await tool(session, "queue_claim", capabilities=["general"])
        same = await dropin(session, "loki_task_queue_update", task_id=task_id,
                            status="in_progress", priority="critical")  # fmt: skip
        assert same["task"]["status"] == "in_progress"
        done = await dropin(session, "loki_task_queue_update", task_id=task_id, status="completed")
        assert done == {"success": True, "task": {**same["task"], "status": "completed",
                                                  "state": "completed"}}  # fmt: skip
        report = direct(lokid, "queue.get", project, id=task_id)["task"]["result"]
        assert report["decisionReport"]["statement"].startswith("marked completed")

        status = await dropin(session, "loki_project_status")
        assert status["tasks"] == {"total": 1, "pending": 0, "in_progress": 0, "completed": 1,
                                   "blocked": 0}  # fmt: skip
        assert status["project"]["path"] == str(project)


async def test_loki_mode_update_moves_dead_letters_and_held_tasks(lokid, project):
    async with bridge(lokid.socket, project, "--agent", "lm") as session:
        made = await tool(session, "queue_enqueue", task={"type": "ops", "maxRetries": 1})
        await tool(session, "queue_claim", capabilities=["ops"])
        blocked = await dropin(session, "loki_task_queue_update", task_id=made["id"],
                               status="blocked")  # fmt: skip
        assert blocked["task"]["status"] == "blocked"
        assert direct(lokid, "queue.get", project, id=made["id"])["state"] == "dead-letter"
        back = await dropin(session, "loki_task_queue_update", task_id=made["id"],
                            status="pending")  # fmt: skip
        assert back["task"]["status"] == "pending"
        listed = await dropin(session, "loki_task_queue_list")
        assert [t["status"] for t in listed["tasks"]] == ["pending"]


async def test_loki_complete_task_completes_held_tasks_and_records_the_claim(lokid, project):
    async with bridge(lokid.socket, project, "--agent", "lm") as session:
        missing = await dropin(session, "loki_complete_task", True,
                               completion_statement="done", evidence=" ")  # fmt: skip
        assert missing == {"error": "evidence is required"}
        made = await tool(session, "queue_enqueue", task={"type": "eng"})
        other = await tool(session, "queue_enqueue", task={"type": "eng", "payload": {"n": 2}})
        await tool(session, "queue_claim", capabilities=["eng"])
        claimed = await dropin(session, "loki_complete_task", completion_statement="all done",
                               evidence="12 tests pass", confidence="HIGH")  # fmt: skip
    assert claimed == {
        "recorded": True, "path": ".loki/events.jsonl",
        "signal": ".loki/signals/TASK_COMPLETION_CLAIMED", "confidence": "high",
        "completed": [made["id"]],
    }  # fmt: skip
    task = direct(lokid, "queue.get", project, id=made["id"])
    assert task["state"] == "completed"
    assert task["task"]["result"]["decisionReport"] == {
        "statement": "all done", "evidence": "12 tests pass", "confidence": "high"
    }  # fmt: skip
    assert direct(lokid, "queue.get", project, id=other["id"])["state"] == "pending"
    signal = json.loads((project / ".loki" / "signals" / "TASK_COMPLETION_CLAIMED").read_text())
    assert signal["statement"] == "all done" and signal["type"] == "task_completion_claim"
    line = json.loads((project / ".loki" / "events.jsonl").read_text().splitlines()[-1])
    assert line["type"] == "task_completion_claim" and line["data"]["evidence"] == "12 tests pass"


# -- resources ---------------------------------------------------------------------------------


def test_events_mark_the_resources_they_change():
    assert resources.uris_for({"topic": "resync"}) == resources.ALL
    assert resources.uris_for({"topic": "queue.claimed"}) == (
        STATUS, PENDING, "lokid://queue/in-progress"
    )  # fmt: skip
    assert resources.uris_for({"topic": "breaker.opened"}) == (STATUS,)
    assert set(resources.uris_for({"topic": "queue.something-new"})) == set(resources.ALL)


async def test_resources_read_the_project(lokid, project):
    direct(lokid, "queue.enqueue", project, task={"type": "eng"})
    async with bridge(lokid.socket, project) as session:
        listed = [r.uri for r in (await session.list_resources()).resources]
        assert listed == list(resources.ALL)
        pending = json.loads((await session.read_resource(PENDING)).contents[0].text)
        assert pending["state"] == "pending" and len(pending["tasks"]) == 1
        status = json.loads((await session.read_resource(STATUS)).contents[0].text)
        assert status["queue"]["pending"] == 1
        with pytest.raises(MCPError, match="no resource"):
            await session.read_resource("lokid://queue/nowhere")


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
async def test_subscribed_resources_are_updated_from_lokids_events(lokid, project):
    """Handshake-era clients: resources/subscribe, then notifications/resources/updated."""
    updated: list[str] = []

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/resources/updated":
            updated.append(message.params.uri)

    async with bridge(lokid.socket, project, mode="legacy", message_handler=on_message) as s:
        await s.subscribe_resource(PENDING)
        await s.subscribe_resource(STATUS)
        with anyio.fail_after(20):
            while not {PENDING, STATUS} <= set(updated):  # the catch-up on subscribing
                await anyio.sleep(0.01)
            updated.clear()
            direct(lokid, "queue.enqueue", project, task={"type": "eng"})
            while not {PENDING, STATUS} <= set(updated):
                await anyio.sleep(0.01)
        assert "lokid://queue/completed" not in updated  # not subscribed
        await s.unsubscribe_resource(PENDING)
        updated.clear()
        direct(lokid, "breaker.trip", project, type="eng")
        with anyio.fail_after(20):
            while STATUS not in updated:
                await anyio.sleep(0.01)
        assert PENDING not in updated


async def test_listen_streams_get_updates_and_a_restart_updates_everything(tmp_short, project):
    """2026-07-28 clients: a subscriptions/listen stream; lokid restarting means every
    resource may have changed."""
    daemon = Lokid(tmp_short).start()
    try:
        async with bridge(daemon.socket, project) as session:
            watched = [PENDING, "lokid://queue/in-progress"]
            async with session.listen(resource_subscriptions=watched) as sub:
                seen: set[str] = set()

                async def until(uris: set[str]) -> None:
                    with anyio.fail_after(20):
                        async for event in sub:
                            assert isinstance(event, ResourceUpdated)
                            seen.add(event.uri)
                            if uris <= seen:
                                return

                await until(set(watched))  # the catch-up on subscribing
                seen.clear()
                await tool(session, "queue_enqueue", task={"type": "eng"})
                await until({PENDING})
                seen.clear()
                daemon.stop()
                daemon.start()
                await until(set(watched))
                assert STATUS not in seen  # never asked for
            # the bridge's pooled connection died with the old lokid: a new one answers
            assert (await tool(session, "queue_stats"))["states"]["pending"] == 1
    finally:
        daemon.kill()


async def test_tool_results_match_their_output_schemas_in_a_real_client(lokid, project):
    """The SDK's client validates structured results against the output schema: a
    reply lokid gives that the schema does not allow would fail these calls."""
    async with bridge(lokid.socket, project) as session:
        made = await tool(session, "queue_enqueue", task={"type": "eng", "extra": {"k": 1}})
        await tool(session, "queue_claim", capabilities=["eng"], lease=5)
        next_ = {"capabilities": ["eng"]}
        done = await tool(
            session, "queue_complete", id=made["id"], result={"decisionReport": {"a": 1}},
            claimNext=next_,
        )  # fmt: skip
        assert done["next"] == {"task": None}
        for name in ("queue_stats", "dlq_list", "breakers_list", "project_status", "queue_list"):
            await tool(session, name)
