"""Which project a command is about: `--project` as the user typed it, else the nearest
folder with a `.loki/` at or above the current one, as git finds its repository.

Only `lokictl init`, `project add` and `queue add --init` make a folder a project;
everything else outside a project is refused, so a wrong folder never becomes one.
"""

from __future__ import annotations

import argparse
import os

from lokictl._ui import Failure
from lokid.paths import absolute_project, find_project

NOT_A_PROJECT = "not inside a Loki Mode project (no .loki/ here or above); run `lokictl init`"
HOME_NOTE = "~/.loki is Loki Mode's global folder, not a project; --project ~ if you mean it"


def cwd() -> str:
    """The current folder as the shell names it (`$PWD`, symlinks kept) when $PWD really
    is this folder; a stale $PWD (a program that changed folder without updating it)
    is not trusted."""
    pwd = os.environ.get("PWD")
    if pwd and os.path.isabs(pwd):
        try:
            if os.path.samefile(pwd, "."):
                return os.path.normpath(pwd)
        except OSError:
            pass
    return os.getcwd()


def typed_path(text: str) -> str:
    """A path as people type it (`.`, `proj/`, `../app`, `~/app`) made absolute and
    normal against the logical current folder: the wire takes only normal paths."""
    text = os.path.expanduser(text)
    return absolute_project(text, {**os.environ, "PWD": cwd()})


def project_of(args: argparse.Namespace, *, required: bool = True) -> str | None:
    """The project for this command: `--project`, else discovery from the current
    folder. A folder without `.loki/` is refused (exit 2) when one is `required`."""
    given = getattr(args, "project", None)
    if given:
        path = typed_path(given)
        if required:
            check_project(path)
        return path
    found = find_project(cwd())  # already absolute: $PWD is not read again
    if found is not None and found == home():
        # ~/.loki is Loki Mode's global folder (dashboard, config): being in $HOME is not
        # asking for it as a project; `--project ~` is.
        if required:
            raise Failure(f"{NOT_A_PROJECT} ({HOME_NOTE})")
        found = None
    if found is None and required:
        raise Failure(NOT_A_PROJECT)
    return found


def home() -> str:
    return os.path.normpath(os.path.expanduser("~"))


def check_project(path: str) -> None:
    if not os.path.isdir(path):
        raise Failure(f"no such folder: {path}")
    if not os.path.isdir(os.path.join(path, ".loki")):
        raise Failure(f"{path} is not a Loki Mode project (no .loki/); run `lokictl init {path}`")


def init_project(path: str) -> bool:
    """Create `path/.loki/`; False when it was there already. Never in $HOME, whose
    `.loki/` is Loki Mode's global folder."""
    if not os.path.isdir(path):
        raise Failure(f"no such folder: {path}")
    if path == home():
        raise Failure(
            f"{path} is your home folder, whose .loki/ is Loki Mode's global folder; "
            "make a project in a folder of its own"
        )
    try:
        os.mkdir(os.path.join(path, ".loki"))
    except FileExistsError:
        return False
    except OSError as exc:
        raise Failure(f"cannot create {path}/.loki: {exc.strerror}", 1, "io") from None
    return True
