"""One lokid agent for bench_peers.py: complete with claimNext in a loop, one request a cycle.

usage: python peer_agent.py SOCKET PROJECT SECONDS AGENT
Prints "ready" once it holds its first task, reads the start time (epoch seconds) from stdin,
works from then for SECONDS, then prints {"cycles": n, "lat": [us, ...], "drained": bool}.
The same protocol as peers/agent.mjs (BullMQ), so both are started and timed alike.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

import msgspec

CAPS = ["eng-backend", "eng-frontend", "ops-devops", "eng-qa"]
REPORT = {"decisionReport": {"why": "bench"}}


def main() -> None:
    path, project, seconds, agent = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    encode, decode = msgspec.msgpack.encode, msgspec.msgpack.decode
    header = struct.Struct(">I")

    def call(msgid: int, method: str, params: dict) -> dict:
        body = encode([0, msgid, method, params])
        sock.sendall(header.pack(len(body)) + body)
        need, buf = 4, b""
        while len(buf) < need:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("lokid closed the connection")
            buf += chunk
            if len(buf) >= 4 and need == 4:
                need = 4 + header.unpack_from(buf)[0]
        reply = decode(buf[4:need])
        if reply[2] is not None:
            raise RuntimeError(f"{method}: {reply[2]}")
        return reply[3]

    claim = {"project": project, "agent": agent, "capabilities": CAPS}
    task = call(1, "queue.claim", claim)["task"]
    print("ready", flush=True)
    start = float(sys.stdin.readline())
    end = start + seconds
    time.sleep(max(0.0, start - time.time()))
    done = {"project": project, "agent": agent, "result": REPORT}
    done["claimNext"] = {"capabilities": CAPS}
    lat: list[float] = []
    clock = time.perf_counter_ns
    drained = False
    while task is not None:
        t0 = clock()
        task = call(2, "queue.complete", done | {"id": task["id"]})["next"]["task"]
        lat.append((clock() - t0) / 1000)
        if time.time() >= end:
            break
    else:
        drained = True
    print(json.dumps({"cycles": len(lat), "lat": lat, "drained": drained}), flush=True)


if __name__ == "__main__":
    main()
