"""`.loki/STOP` as Loki Mode means it, reaching the runs lokid started.

Loki Mode's runner looks at STOP between iterations, deletes it and ends; `loki stop` touches
it and deletes it again once it has stopped the session. So STOP is a request with a
lifetime, and lokid honours it the same way:
- it waits a grace period, in which the run may end by itself (and delete STOP);
- STOP gone (or replaced by a newer one) at the end of the grace withdraws lokid's stop;
- only runs lokid manages are stopped (a Loki Mode run it did not start honours STOP itself,
  at the end of its iteration), and only those that started before STOP appeared;
- once lokid has stopped a run because of STOP, it deletes STOP, as `loki stop` does.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from lokid.docker.runs import Runs
from lokid.errors import LokidError
from lokid.projects import Project
from lokid.wire import events as ev

log = logging.getLogger("lokid.runs")

Emit = Callable[[str | None, Any], None]
Stamp = tuple[int, int]  # (inode, mtime_ns) of one STOP file


def _remove_stop(path: Path) -> None:
    """Delete STOP if it is a file (as `rm -f` would; anything else is not ours to remove)."""
    try:
        if stat.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _stamp(path: os.PathLike[str]) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns)


class StopFile:
    def __init__(self, runs: Runs, grace: float, emit: Emit) -> None:
        self._runs = runs
        self._grace = grace
        self._emit = emit
        self._pending: dict[str, Stamp] = {}  # project -> the STOP being honoured

    async def honour(self, project: Project) -> None:
        """STOP appeared in `project`: after the grace, stop the runs it concerns."""
        path = project.loki / "STOP"
        stamp = _stamp(path)
        if stamp is None or self._pending.get(project.path) == stamp:
            return
        self._pending[project.path] = stamp
        try:
            await trio.sleep(self._grace)
            if _stamp(path) != stamp:
                self._done(project, [], "withdrawn")  # deleted by the run, or by a user
                return
            appeared = stamp[1] / 1e9
            result = await self._runs.stop_started_before(project, appeared)
            if result.stopped and _stamp(path) == stamp:
                _remove_stop(path)  # as `loki stop` does once the session is stopped
            self._done(project, list(result.stopped), "stopped" if result.stopped else "no-run")
        except (LokidError, OSError) as exc:
            why = exc.message if isinstance(exc, LokidError) else str(exc)
            log.warning("STOP in %s: could not stop the run: %s", project.path, why)
        finally:
            if self._pending.get(project.path) == stamp:
                del self._pending[project.path]

    def _done(self, project: Project, stopped: list[str], outcome: str) -> None:
        self._emit(project.path, ev.SignalStopDone(stopped=stopped, outcome=outcome))
