"""Loki Mode's queue files as lokid shares them: whose entry is whose, and the merge.

`.loki/queue/<state>.json` holds entries written by Loki Mode's tools (PRD stories,
iteration cards, TodoWrite items, iteration records) beside lokid's tasks. lokid's own
entries carry `"managedBy": "lokid"`; an entry without it whose id is a lokid task is a
story lokid imported (it is lokid's from then on). Every other entry is Loki Mode's, and
a merge carries it through byte for byte, in its order: lokid only replaces its own block
of entries. The block stays where lokid's entries were; a file without one gets it at the
end, except the files Loki Mode caps to its newest 50 entries (completed.json and
failed.json), where it goes first, so that Loki Mode's own cap trims lokid's entries
(which lokid restores from its database) before any of Loki Mode's.

Pure functions over bytes: the view writer (views.py) does the reading, locking and
writing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from lokid.errors import BadFile
from lokid.wire.messages import UNDECODABLE

MANAGED_BY = "lokid"
# Files whose writers keep only their newest N entries: lokid's block goes first there.
CAPPED_FILES = frozenset({"completed", "failed"})


class _Head(msgspec.Struct):
    """The two fields of an entry that say whose it is (everything else stays raw)."""

    id: Any = None
    managedBy: Any = None  # the file's own key, camelCase


_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_raw_map = msgspec.json.Decoder(dict[str, msgspec.Raw])
_head = msgspec.json.Decoder(_Head)


@dataclass(slots=True)
class Entry:
    raw: bytes  # the entry exactly as it is in the file
    id: str | None
    ours: bool  # marked managedBy: lokid


@dataclass(slots=True)
class QueueFile:
    """A parsed queue file: its entries, and the wrapper they sit in when it is the
    `{"tasks": [...]}` shape (other keys kept as they are)."""

    entries: list[Entry]
    wrapper: dict[str, msgspec.Raw] | None = None


def parse(data: bytes) -> QueueFile:
    """A queue file's entries; `BadFile` when it is not a JSON array of entries (nor
    `{"tasks": [...]}`)."""
    if not data.strip():
        return QueueFile([])
    wrapper = None
    try:
        items = _raw_list.decode(data)
    except msgspec.ValidationError:  # JSON, but not an array: the `{"tasks": [...]}` shape?
        try:
            wrapper = _raw_map.decode(data)
            items = _raw_list.decode(wrapper["tasks"])
        except (*UNDECODABLE, KeyError) as exc:
            raise BadFile(f"expected an array of tasks or {{'tasks': [...]}}: {exc}") from exc
    except UNDECODABLE as exc:
        raise BadFile(f"not valid JSON: {exc}") from exc
    return QueueFile([_entry(bytes(item)) for item in items], wrapper)


def _entry(raw: bytes) -> Entry:
    try:
        head = _head.decode(raw)
    except UNDECODABLE:  # not an object: somebody's, never lokid's
        return Entry(raw, None, False)
    task_id = head.id if isinstance(head.id, str) else None
    return Entry(raw, task_id, head.managedBy == MANAGED_BY)


def lokid_entries(parsed: QueueFile, known: Callable[[list[str]], set[str]]) -> set[int]:
    """Indexes of the entries that are lokid's: marked, or a lokid task's id (a story
    lokid imported). `known` says which of some ids are lokid's tasks."""
    unmarked = [e.id for e in parsed.entries if not e.ours and e.id is not None]
    tasks = known(unmarked) if unmarked else set()
    return {i for i, e in enumerate(parsed.entries) if e.ours or (e.id in tasks)}


def merge(parsed: QueueFile, ours: Iterable[int], block: bytes, state_file: str) -> bytes:
    """The file with lokid's entries (indexes `ours`) replaced by `block` (the inside of a
    JSON array: `a,b,c`, maybe empty), every other entry kept in order."""
    mine = set(ours)
    kept = [e.raw for i, e in enumerate(parsed.entries) if i not in mine]
    if mine:
        at = sum(1 for i in range(min(mine)) if i not in mine)
    elif state_file in CAPPED_FILES:
        at = 0
    else:
        at = len(kept)
    parts = [*kept[:at], *([block] if block else []), *kept[at:]]
    array = b"[" + b",".join(parts) + b"]"
    if parsed.wrapper is None:
        return array
    body = dict(parsed.wrapper)
    body["tasks"] = msgspec.Raw(array)
    return msgspec.json.encode(body)


def foreign_ids(parsed: QueueFile, ours: Iterable[int]) -> list[str]:
    """The ids of the entries that are not lokid's (for tests and logs)."""
    mine = set(ours)
    return [e.id for i, e in enumerate(parsed.entries) if i not in mine and e.id is not None]
