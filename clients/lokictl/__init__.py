"""A thin, blocking client for lokid: the standard library and msgspec only.

from lokictl import Client
with Client.connect() as lokid:
    print(lokid.call("daemon.status"))
"""

from typing import Any

from lokictl._client import FOREVER, Client, DaemonError, NotRunning, ProtocolError

__all__ = [
    "FOREVER",
    "Client",
    "DaemonError",
    "NotRunning",
    "ProtocolError",
    "spawn_daemon",
]


def __getattr__(name: str) -> Any:
    # subprocess costs milliseconds at start-up; only spawning needs it.
    if name == "spawn_daemon":
        from lokictl._spawn import spawn_daemon

        return spawn_daemon
    raise AttributeError(f"module 'lokictl' has no attribute {name!r}")
