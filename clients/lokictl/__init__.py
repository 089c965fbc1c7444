"""A thin, blocking client for lokid: the standard library and msgspec only.

from lokictl import Client
with Client.connect() as lokid:
    print(lokid.call("daemon.status"))
"""

from lokictl._client import Client, DaemonError, NotRunning, ProtocolError
from lokictl._spawn import spawn_daemon

__all__ = ["Client", "DaemonError", "NotRunning", "ProtocolError", "spawn_daemon"]
