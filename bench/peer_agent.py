"""lokid agents for bench_peers.py: complete with claimNext in a loop, one request a cycle.

usage: python peer_agent.py SOCKET PROJECT SECONDS AGENT [COUNT]
COUNT agents (default 1), each with its own connection, on one event loop in this process
(as peers/agent.mjs runs BullMQ's Workers). Prints "ready" once each holds its first task,
reads the start time (epoch seconds) from stdin, works from then for SECONDS, then prints
{"cycles": n, "lat": [us, ...], "drained": bool}. The same protocol as peers/agent.mjs, so
both are started and timed alike.
"""

from __future__ import annotations

import json
import selectors
import socket
import struct
import sys
import time

import msgspec

CAPS = ["eng-backend", "eng-frontend", "ops-devops", "eng-qa"]
REPORT = {"decisionReport": {"why": "bench"}}
HEADER = struct.Struct(">I")
encode, decode = msgspec.msgpack.encode, msgspec.msgpack.decode


def request(method: str, params: dict) -> bytes:
    body = encode([0, 1, method, params])
    return HEADER.pack(len(body)) + body


class Agent:
    """One connection: its task, what it has read so far, when its request left."""

    def __init__(self, path: str, project: str, name: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.done = {"project": project, "agent": name, "result": REPORT}
        self.done["claimNext"] = {"capabilities": CAPS}
        self.buf = b""
        self.sent_at = 0
        self.task = self.call(request("queue.claim", {"project": project, "agent": name,
                                                      "capabilities": CAPS}))["task"]  # fmt: skip

    def call(self, frame: bytes) -> dict:
        self.sock.sendall(frame)
        while (reply := self.reply()) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("lokid closed the connection")
            self.buf += chunk
        return reply

    def reply(self) -> dict | None:
        """The next whole reply in the buffer, if there is one."""
        if len(self.buf) < 4:
            return None
        end = 4 + HEADER.unpack_from(self.buf)[0]
        if len(self.buf) < end:
            return None
        msg = decode(self.buf[4:end])
        self.buf = self.buf[end:]
        if msg[2] is not None:
            raise RuntimeError(f"lokid: {msg[2]}")
        return msg[3]

    def send_next(self, clock: int) -> None:
        self.sent_at = clock
        self.sock.sendall(request("queue.complete", self.done | {"id": self.task["id"]}))


def main() -> None:
    path, project, seconds, name = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    count = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    agents = [Agent(path, project, f"{name}-{i}") for i in range(count)]
    print("ready", flush=True)
    start = float(sys.stdin.readline())
    end = start + seconds
    time.sleep(max(0.0, start - time.time()))
    lat: list[float] = []
    clock = time.perf_counter_ns
    drained = False
    if count == 1:  # a blocking loop: the lowest latency one client can have
        agent = agents[0]
        while agent.task is not None:
            t0 = clock()
            agent.task = agent.call(request("queue.complete", agent.done | {
                "id": agent.task["id"]}))["next"]["task"]  # fmt: skip
            lat.append((clock() - t0) / 1000)
            if time.time() >= end:
                break
        else:
            drained = True
    else:
        sel = selectors.DefaultSelector()
        for agent in agents:
            sel.register(agent.sock, selectors.EVENT_READ, agent)
            agent.send_next(clock())
        busy = len(agents)
        while busy:
            for key, _ in sel.select(1.0):
                agent = key.data
                chunk = agent.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("lokid closed the connection")
                agent.buf += chunk
                reply = agent.reply()
                if reply is None:
                    continue
                now = clock()
                lat.append((now - agent.sent_at) / 1000)
                agent.task = reply["next"]["task"]
                if agent.task is None or time.time() >= end:
                    drained = drained or agent.task is None
                    sel.unregister(agent.sock)
                    busy -= 1
                else:
                    agent.send_next(now)
    print(json.dumps({"cycles": len(lat), "lat": lat, "drained": drained}), flush=True)


if __name__ == "__main__":
    main()
