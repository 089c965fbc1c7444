"""Progress on a terminal for long requests: per-layer bytes and a total, as `docker
pull` shows them, and a spinner with the elapsed seconds. Built on rich, which only the
commands that show progress import. Drawn on stderr and cleared at the end."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Column

# Docker's per-layer statuses: those whose bytes count, and those that end a layer.
_COUNTED = ("Downloading", "Extracting")
_DONE = ("Download complete", "Pull complete", "Already exists")
_LAYER = re.compile(r"[0-9a-f]{12,64}")


def _console() -> Console:
    return Console(stderr=True)


class Spinner:
    """`⠙ stopping the run 0:00:04`: for a request with nothing to count."""

    def __init__(self, what: str) -> None:
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=_console(),
            transient=True,
        )
        self._bar.add_task(what, total=None)

    def __enter__(self) -> Spinner:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def event(self, event: dict[str, Any]) -> None:
        """Nothing to count; the spinner and its clock move by themselves."""


class PullProgress:
    """One line for the whole pull (bytes of every layer, speed, elapsed) and one bar
    per layer with its status, fed by `image.pull` events."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._bars = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", table_column=Column(width=44, no_wrap=True)),
            BarColumn(bar_width=30),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=_console(),
            transient=True,
        )
        self._total = self._bars.add_task(what, total=None)
        self._layers: dict[str, Any] = {}
        self._bytes: dict[str, tuple[int, int]] = {}

    def __enter__(self) -> PullProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()

    def event(self, event: dict[str, Any]) -> None:
        if event.get("topic") != "image.pull":
            return
        data = event.get("data") or {}
        layer, status = data.get("layer") or "", data.get("status") or ""
        if _LAYER.fullmatch(layer):
            self._layer(layer[:12], status, data.get("current"), data.get("total"))
        else:  # "Pulling from ...", "Digest: ...", "Status: ...": the pull as a whole
            self._bars.update(self._total, description=f"{self._what}: {status}"[:44])
        if self._bytes:
            done = sum(current for current, _ in self._bytes.values())
            size = sum(total for _, total in self._bytes.values())
            self._bars.update(self._total, completed=done, total=size)
        # Each event is drawn (lokid sends at most four a second per layer), not only
        # those that happen to come before the next timed refresh.
        self._bars.refresh()

    def _layer(self, layer: str, status: str, current: int | None, total: int | None) -> None:
        task = self._layers.get(layer)
        if task is None:
            task = self._layers[layer] = self._bars.add_task("", total=None)
        if status.startswith("Downloading") and total:
            self._bytes[layer] = (min(current or 0, total), total)
        elif status in _DONE and layer in self._bytes:
            size = self._bytes[layer][1]
            self._bytes[layer] = (size, size)
        text = f"  {layer} {status}"
        if status.startswith(_COUNTED) and total:
            self._bars.update(task, description=text, completed=current or 0, total=total)
        elif status in _DONE:
            size = self._bytes.get(layer, (1, 1))[1]
            self._bars.update(task, description=text, completed=size, total=size)
        else:
            self._bars.update(task, description=text)
