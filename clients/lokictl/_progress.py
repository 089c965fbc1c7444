"""Progress on a terminal for long requests: per-layer bytes and a total, as `docker
pull` shows them, and a spinner with the elapsed seconds. Built on rich, which only the
commands that show progress import."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress

# Docker's per-layer statuses that carry byte counts, and those that mean a layer is done.
_COUNTED = ("Downloading", "Extracting")
_DONE = ("Pull complete", "Already exists", "Download complete")


class Progress:
    """A spinner line (`starting… 3s`) and, once `image.pull` events come, one bar per
    layer and a total of the bytes to download. Drawn on stderr, cleared at the end."""

    def __init__(self, what: str) -> None:
        self._bars = RichProgress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._main = self._bars.add_task(what, total=None)
        self._layers: dict[str, Any] = {}
        self._sizes: dict[str, tuple[int, int]] = {}

    def __enter__(self) -> Progress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()

    def event(self, event: dict[str, Any]) -> None:
        if event.get("topic") != "image.pull":
            return
        data = event.get("data") or {}
        layer, status = data.get("layer"), data.get("status") or ""
        if not layer:
            self._bars.update(self._main, description=f"{data.get('image')}: {status}")
            return
        task = self._layers.get(layer)
        if task is None:
            task = self._layers[layer] = self._bars.add_task(f"  {layer[:12]}", total=None)
        current, total = data.get("current"), data.get("total")
        if status.startswith("Downloading") and total:
            self._sizes[layer] = (current or 0, total)
        elif status in _DONE and layer in self._sizes:
            self._sizes[layer] = (self._sizes[layer][1], self._sizes[layer][1])
        label = f"  {layer[:12]} {status}"
        if status.startswith(_COUNTED) and total:
            self._bars.update(task, description=label, completed=current or 0, total=total)
        else:
            self._bars.update(task, description=label)
        if self._sizes:
            done = sum(c for c, _ in self._sizes.values())
            size = sum(t for _, t in self._sizes.values())
            self._bars.update(self._main, completed=done, total=size)
        # Each event is drawn (lokid sends at most four a second per layer), not only
        # those that happen to precede the next timed refresh.
        self._bars.refresh()
