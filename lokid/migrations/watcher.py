"""The watchfiles watcher on the migrations folder, whether it exists yet or not.

While `root` (`~/.loki/migrations`) exists it is watched recursively, and each
batch of changes to a migration's folder, `manifest.json` or `progress.md`
(never `docs/`, temporary files or the lock file) is handed over as the set of
migration ids it touched. While `root` does not exist, its nearest existing
ancestor is watched (not recursively) for the next folder on the way, and the
watch moves down as folders appear; a root that is removed sends it back up.
Each time a watch of `root` begins, `look(None)` asks for everything to be
looked at, so what changed while no watch was in place is not lost.

Stopping: `close()` or a cancellation sets watchfiles' stop event, which its
thread notices within one `step`, so no one waits for its five-second timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import anyio
import trio
import watchfiles

from lokid.domain import migration as rules
from lokid.migrations.folder import MANIFEST, PROGRESS

log = logging.getLogger("lokid.migrations")

RETRY_AFTER = 1.0  # seconds before a watch that failed (a folder vanished under it) restarts

Look = Callable[[set[str] | None], Awaitable[None]]


class FolderWatch:
    def __init__(self, root: Path, look: Look, debounce_ms: int, step_ms: int) -> None:
        self.root = root
        self._look = look
        self._debounce_ms = debounce_ms
        self._step_ms = step_ms
        self._closed = False
        self._stop: anyio.Event | None = None
        self.watching: Path | None = None  # what is watched now (root or an ancestor)

    def restart(self) -> None:
        """Begin a fresh watch (and a look at everything); from the trio thread."""
        if self._stop is not None:
            self._stop.set()

    def close(self) -> None:
        self._closed = True
        self.restart()

    async def run(self) -> None:
        while not self._closed:
            self._stop = anyio.Event()
            try:
                if self.root.is_dir():
                    await self._watch_root()
                else:
                    await self._wait_for_root()
            except (OSError, RuntimeError) as exc:
                log.info("migrations watcher restarts: %s", exc)
                self.watching = None
                with trio.move_on_after(RETRY_AFTER):
                    await self._stop.wait()

    async def _watch_root(self) -> None:
        root = str(self.root)

        def wanted(_change: watchfiles.Change, path: str) -> bool:
            return path == root or _migration_of(self.root, path) is not None

        async def batch(changes: set[tuple[watchfiles.Change, str]]) -> None:
            ids = {mid for _, path in changes if (mid := _migration_of(self.root, path))}
            if ids:
                await self._look(ids)
            if not self.root.is_dir():
                self.restart()  # removed: watch for it to come back

        await self._watch(self.root, True, wanted, batch, lambda: self._look(None))

    async def _wait_for_root(self) -> None:
        base = self.root
        while not base.is_dir() and base != base.parent:
            base = base.parent
        step = self.root.relative_to(base).parts[0]
        next_one = str(base / step)

        def wanted(_change: watchfiles.Change, path: str) -> bool:
            return path == next_one

        async def batch(_changes: set[tuple[watchfiles.Change, str]]) -> None:
            self.restart()

        async def begun() -> None:
            if Path(next_one).exists():  # made before the watch was in place
                self.restart()

        await self._watch(base, False, wanted, batch, begun)

    async def _watch(
        self,
        path: Path,
        recursive: bool,
        wanted: Callable[[watchfiles.Change, str], bool],
        batch: Callable[[set[tuple[watchfiles.Change, str]]], Awaitable[None]],
        begun: Callable[[], Awaitable[None]],
    ) -> None:
        stop = self._stop
        assert stop is not None

        async with trio.open_nursery() as nursery:

            async def guard() -> None:
                try:
                    await trio.sleep_forever()
                finally:
                    stop.set()  # on cancellation too: watchfiles' thread returns within a step

            async def pump() -> None:
                try:
                    async for changes in watchfiles.awatch(
                        path,
                        watch_filter=wanted,
                        recursive=recursive,
                        debounce=self._debounce_ms,
                        step=self._step_ms,
                        stop_event=stop,
                        ignore_permission_denied=True,
                    ):
                        await _safely(batch, changes)
                finally:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(guard)
            nursery.start_soon(pump)
            # watchfiles adds its inotify watches when the generator first runs, before its
            # first wait; two scheduling rounds later they are in place.
            await trio.sleep(0)
            await trio.sleep(0)
            self.watching = path
            log.info("watching %s for migrations", path)
            await _safely(lambda _: begun(), None)


async def _safely(fn: Callable[[object], Awaitable[None]], arg: object) -> None:
    """A bad file or a failing look never stops the watcher, let alone the daemon."""
    try:
        await fn(arg)
    except Exception:
        log.exception("looking at the migrations failed")


def _migration_of(root: Path, path: str) -> str | None:
    """The migration id a changed path belongs to, when the path matters."""
    try:
        parts = Path(path).relative_to(root).parts
    except ValueError:
        return None
    if not parts or rules.id_problem(parts[0]) is not None:
        return None
    if len(parts) == 1 or (len(parts) == 2 and parts[1] in (MANIFEST, PROGRESS)):
        return parts[0]
    return None


def ids_in(root: Path) -> Iterable[str]:
    """The migration ids of the folders under `root` (blocking)."""
    try:
        return [p.name for p in root.iterdir() if rules.id_problem(p.name) is None and p.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
