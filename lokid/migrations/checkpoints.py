"""Checkpoints (git tags in the codebase being migrated) and the rollback to one.

A checkpoint of step S is the lightweight tag `loki-migrate/S/pre` on the
codebase's HEAD, recorded in the manifest's `checkpoints` and in
`checkpoints/S.json`. The tag is made first (outside the lock, as the engine
does); if the manifest then cannot be saved (the lock held elsewhere too long,
the manifest unreadable, a write failing) the tag and the metadata file are
removed again and the error stands, so a checkpoint exists either everywhere or
nowhere.

Rollback is `git reset --hard` to such a tag: it DESTROYS uncommitted changes to
tracked files and moves the current branch back (later commits stay reachable
only through the reflog and the `previous_head` lokid reports). Untracked files
are left alone. The area only calls it with an explicit confirmation.

git runs with an argv list, never a shell; nothing here is reachable without a
validated step id. Blocking: worker threads only.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lokid.domain import migration as rules
from lokid.errors import Conflict, NotFound, Unavailable
from lokid.migrations.folder import MigrationFolder, checkpoints_of, source_of
from lokid.migrations.lock import manifest_lock

log = logging.getLogger("lokid.migrations")

GIT_TIMEOUT = 60.0  # seconds; a tag or reset on a local repository takes milliseconds


class GitFailed(Exception):
    def __init__(self, args: list[str], detail: str) -> None:
        super().__init__(f"git {' '.join(args)}: {detail}")
        self.detail = detail


def git(codebase: Path, *args: str) -> str:
    """Run git in `codebase`; its stdout, stripped. GitFailed with git's own last line."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=codebase,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
        )
    except FileNotFoundError:
        raise Unavailable("git is not installed (needed for migration checkpoints)") from None
    except subprocess.TimeoutExpired:
        raise Unavailable(f"git {args[0]} in {codebase} took over {GIT_TIMEOUT:g} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise GitFailed(list(args), lines[-1] if lines else f"exit status {done.returncode}")
    return done.stdout.strip()


def codebase_of(folder: MigrationFolder) -> Path:
    """The codebase the migration's manifest names; it must be an existing folder."""
    source = source_of(folder.read_manifest())
    if not source or not os.path.isabs(source):
        raise Conflict(f"migration {folder.id} names no codebase (source_info.path)")
    path = Path(source)
    if not path.is_dir():
        raise NotFound(f"the codebase of migration {folder.id}, {path}, does not exist")
    return path


@dataclass(frozen=True, slots=True)
class Checkpoint:
    tag: str
    commit: str
    created_at: str


def create(folder: MigrationFolder, step: str, now: str, timeout: float) -> Checkpoint:
    codebase = codebase_of(folder)
    tag = rules.checkpoint_tag(step)
    try:
        git(codebase, "tag", tag)
        commit = git(codebase, "rev-parse", "--verify", f"refs/tags/{tag}^{{commit}}")
    except GitFailed as exc:
        raise Conflict(f"cannot tag {tag} in {codebase}: {exc.detail}") from exc
    meta = folder.checkpoint_meta_path(step)
    try:
        with manifest_lock(folder.path, timeout):
            manifest = folder.read_manifest()
            manifest["checkpoints"] = [*checkpoints_of(manifest), tag]
            folder.write_checkpoint_meta(step, tag, now)
            folder.write_manifest(manifest)
    except BaseException:
        _undo(codebase, tag, meta)
        raise
    return Checkpoint(tag, commit, now)


def _undo(codebase: Path, tag: str, meta: Path) -> None:
    """The manifest was not saved: the tag and the metadata file must not outlive it."""
    meta.unlink(missing_ok=True)
    try:
        git(codebase, "tag", "-d", tag)
    except (GitFailed, Unavailable) as exc:
        log.error("could not delete the orphaned checkpoint tag %s in %s: %s", tag, codebase, exc)


@dataclass(frozen=True, slots=True)
class Rollback:
    codebase: str
    tag: str
    head: str  # the commit HEAD is at now (the checkpoint's)
    previous_head: str | None  # where HEAD was: `git reset --hard <it>` moves back


def rollback(folder: MigrationFolder, step: str) -> Rollback:
    """`git reset --hard refs/tags/loki-migrate/<step>/pre` in the codebase (destructive)."""
    codebase = codebase_of(folder)
    tag = rules.checkpoint_tag(step)
    try:
        target = git(codebase, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}")
    except GitFailed:
        raise NotFound(f"no checkpoint {tag} in {codebase}") from None
    try:
        previous: str | None = git(codebase, "rev-parse", "--verify", "--quiet", "HEAD")
    except GitFailed:
        previous = None
    try:
        git(codebase, "reset", "--hard", f"refs/tags/{tag}")
    except GitFailed as exc:
        raise Conflict(f"cannot reset {codebase} to {tag}: {exc.detail}") from exc
    return Rollback(str(codebase), tag, target, previous)
