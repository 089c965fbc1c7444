"""The claim+complete cycle through `lokid mcp` beside the same cycle through lokictl.

One lokid, one project of pending tasks; alternating rounds of
- lokictl's Python client: `queue.claim`, then `queue.complete`, over the socket;
- the official MCP SDK's client, speaking to `lokid mcp` over stdio: `queue_claim`, then
  `queue_complete` (the bridge makes the same two socket calls in worker threads; the
  client checks each structured result against its tool's output schema, as it always does).

Prints both latencies and the bridge's overhead as a ratio, and beside them an MCP `ping`
(the SDK's own round trip over stdio, no lokid), the floor under each of the two tool calls.

usage: python bench/bench_mcp.py [--cycles 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import anyio
from _common import LokidProcess, pct
from mcp import Client as McpClient
from mcp import StdioServerParameters

from lokictl import Client

CAPS = ["eng"]
REPORT = {"decisionReport": {"why": "bench"}}


def lokictl_cycles(client: Client, project: str, n: int) -> list[float]:
    out, clock = [], time.perf_counter_ns
    base = {"project": project, "agent": "direct"}
    for _ in range(n):
        start = clock()
        task = client.call("queue.claim", {**base, "capabilities": CAPS})["task"]
        client.call("queue.complete", {**base, "id": task["id"], "result": REPORT})
        out.append((clock() - start) / 1000)
    return out


async def mcp_cycles(session: McpClient, n: int) -> list[float]:
    out, clock = [], time.perf_counter_ns
    for _ in range(n):
        start = clock()
        claimed = await session.call_tool("queue_claim", {"capabilities": CAPS})
        task = claimed.structured_content["task"]
        done = await session.call_tool("queue_complete", {"id": task["id"], "result": REPORT})
        assert not done.is_error, done.content
        out.append((clock() - start) / 1000)
    return out


async def mcp_pings(session: McpClient, n: int) -> list[float]:
    out, clock = [], time.perf_counter_ns
    for _ in range(n):
        start = clock()
        await session.send_ping()
        out.append((clock() - start) / 1000)
    return out


async def measure(socket: Path, project: Path, cycles: int, rounds: int):
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "lokid", "mcp", "--socket", str(socket), "--no-spawn", "--agent", "bridge"],
        cwd=str(project),
    )
    direct, bridged, pings = [], [], []
    per_round = cycles // rounds
    with Client.connect(socket) as client:
        tasks = [{"type": "eng", "payload": {"n": i}} for i in range(2 * cycles + 200)]
        client.call("queue.enqueue_many", {"project": str(project), "tasks": tasks})
        # The handshake era, where `ping` exists (2026-07-28 dropped it); tools/call is alike.
        async with McpClient(params, mode="legacy") as session:
            await mcp_cycles(session, 50)  # warm: imports, caches, the pool's connection
            lokictl_cycles(client, str(project), 50)
            for _ in range(rounds):
                bridged += await mcp_cycles(session, per_round)
                direct += lokictl_cycles(client, str(project), per_round)
                pings += await mcp_pings(session, per_round)
    return direct, bridged, pings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lkm-"))
    project = root / "proj"
    (project / ".loki").mkdir(parents=True)
    try:
        with LokidProcess() as lokid:
            direct, bridged, pings = anyio.run(
                measure, lokid.socket, project, args.cycles, args.rounds
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("MCP bridge benchmark (one lokid; claim+complete, alternating rounds)")
    for name, lat in (("lokictl's Python client", direct), ("lokid mcp, SDK client", bridged)):
        print(f"  {name:24}: p50 {pct(lat, 50):8.1f} us  p99 {pct(lat, 99):8.1f} us")
    ratio = pct(bridged, 50) / pct(direct, 50)
    print(f"  overhead of the bridge, p50: {ratio:.1f}x  ({len(direct)} cycles each)")
    ping = pct(pings, 50)
    print(
        f"  MCP ping over stdio (the SDK alone): p50 {ping:.1f} us; a cycle is two tool "
        f"calls = {pct(bridged, 50) / ping:.1f}x that ping"
    )


if __name__ == "__main__":
    main()
