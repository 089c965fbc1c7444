"""Which listening socket lokid serves: the one a service manager handed it, else its own.

systemd's sockets are adopted by `activation`, launchd's by `launchd` (macOS only).
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from pathlib import Path

from lokid.errors import ActivationError
from lokid.server.listener import Listener
from lokid.service.activation import from_systemd


def inherited_listener(env: MutableMapping[str, str] | None = None) -> Listener | None:
    """The socket a service manager handed us (systemd, then launchd on macOS), if any."""
    listener = from_systemd(env)
    if listener is None and sys.platform == "darwin":
        from lokid.service.launchd import from_launchd  # ctypes and libSystem: macOS only

        listener = from_launchd()
    return listener


def open_listener(path: Path, idle_exit: float | None = None) -> Listener:
    """The one place lokid chooses: the manager's socket if we were given one, else bind."""
    listener = inherited_listener()
    if listener is not None:
        return listener
    if idle_exit is not None:
        raise ActivationError(
            "--idle-exit needs a socket passed by systemd or launchd (nothing would restart "
            "lokid on the next connection); see `lokid service install`"
        )
    return Listener.bind(path)
