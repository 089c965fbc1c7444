"""Which project the bridge serves.

An agent's MCP client starts `lokid mcp` in the agent's working folder, so the project is
found from there upward as lokictl and git find theirs (`lokid.paths.find_project`), unless
`--project` names it. A tool call may name another project; a relative one is taken from
the working folder, as a person would type it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lokid.paths import absolute_project, find_project


class NoProject(Exception):
    """A tool needs a project and none was given or found; the message says how to fix it."""


def working_folder() -> str:
    """The folder we were started in: `$PWD` when it names the same folder as `getcwd()`
    (symlinks kept, as lokictl and Loki Mode's shell name a project), else `getcwd()`.

    An MCP client may pass its own stale `$PWD` while starting us elsewhere; the check
    keeps that from choosing the wrong project.
    """
    here = os.getcwd()
    pwd = os.environ.get("PWD")
    try:
        if pwd and os.path.isabs(pwd) and os.path.samefile(pwd, here):
            return pwd
    except OSError:
        pass
    return here


@dataclass(frozen=True)
class Projects:
    """The default project (None outside any) and the folder it was looked for from."""

    start: str
    default: str | None

    @classmethod
    def find(cls, given: str | None, start: str | None = None) -> Projects:
        start = start or working_folder()
        if given:
            return cls(start, absolute_project(given, {"PWD": start}))
        return cls(start, find_project(start, {**os.environ, "PWD": start}))

    def resolve(self, given: str | None = None) -> str:
        """The project a call is about: the one it names, else the default."""
        if given:
            return absolute_project(given, {"PWD": self.start})
        if self.default is None:
            raise NoProject(
                f"no project: {self.start} is not inside a Loki Mode project (no .loki/ "
                "folder there or above it); pass `project` (a folder path), or start the "
                "server with `lokid mcp --project PATH`"
            )
        return self.default
