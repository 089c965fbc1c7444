"""One migration's folder, `<root>/<id>/`, and its files in Loki Mode's formats.

    manifest.json            {"id", "created_at", "source_info", "target_info", "phases",
                              "feature_list_path", "migration_plan_path", "checkpoints",
                              "status", "progress_pct", "updated_at", "source_path"}
    manifest.json.lock       the cross-process lock (lock.py)
    features.json            [feature] or {"features": [feature]}
    migration-plan.json      {"steps": [{"id", "status", ...}], ...}
    seams.json, docs/        what the understand phase produced
    checkpoints/<step>.json  {"step_id", "tag", "created_at"}
    progress.md              sessions (domain.migration)

Writes are Loki Mode's: the manifest is `json.dumps(indent=2, ensure_ascii=False)`,
no trailing newline; each file is replaced atomically (tmp in the same folder,
fsync, rename), with mode 0600 as the engine's mkstemp gives it. Every key of the
manifest is kept, known or not. Reads take no lock (the engine's reads take none);
read-modify-writes hold the manifest lock around these calls. All of this blocks:
worker threads only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lokid.domain import migration as rules
from lokid.domain.migration import GateFacts, JsonFile
from lokid.errors import InvalidParams, NotFound, Unavailable, unavailable_file
from lokid.files.atomic import write_atomic

MANIFEST = "manifest.json"
PROGRESS = "progress.md"
FILE_MODE = 0o600


class MigrationFolder:
    def __init__(self, root: Path, migration_id: str) -> None:
        """`migration_id` must be valid (`checked` makes one from client input)."""
        self.id = migration_id
        self.path = root / migration_id
        self.manifest_path = self.path / MANIFEST
        self.progress_path = self.path / PROGRESS

    @classmethod
    def checked(cls, root: Path, migration_id: str) -> MigrationFolder:
        """The folder of a client-given id; `invalid_params` before any path is built."""
        problem = rules.id_problem(migration_id)
        if problem is not None:
            raise InvalidParams(problem)
        return cls(root, migration_id)

    # -- the manifest --------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any]:
        """The manifest as stored: `not_found` without one, `unavailable` when it cannot
        be read or is not a manifest (a half-written file from a writer that takes no
        lock reads so until it is whole)."""
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"migration {self.id} not found in {self.path.parent}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise Unavailable(f"cannot read {self.manifest_path}: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Unavailable(f"{self.manifest_path} is not valid JSON: {exc}") from exc
        shape = _manifest_problem(data)
        if shape is not None:
            raise Unavailable(f"{self.manifest_path} is not a migration manifest: {shape}")
        return data

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2, ensure_ascii=False)
        self._write(self.manifest_path, text)

    # -- other files ---------------------------------------------------------------------

    def json_file(self, name: str) -> JsonFile:
        """One JSON file as facts for the rules: absent, invalid (why), or its data."""
        path = self.path / name
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return rules.MISSING
        except (OSError, UnicodeDecodeError) as exc:
            return JsonFile(True, error=f"cannot read it: {exc}")
        try:
            return JsonFile(True, json.loads(text))
        except json.JSONDecodeError as exc:
            return JsonFile(True, error=str(exc))

    def docs_count(self) -> int:
        try:
            with os.scandir(self.path / "docs") as entries:
                return sum(1 for _ in entries)
        except (FileNotFoundError, NotADirectoryError):
            return 0

    def gate_facts(self, phase: str) -> GateFacts:
        """Only the files the gate on leaving `phase` reads."""
        needs = rules.gate_needs(phase)
        return GateFacts(
            docs_count=self.docs_count() if "docs_count" in needs else 0,
            seams_present="seams_present" in needs and (self.path / "seams.json").exists(),
            features=self.json_file("features.json") if "features" in needs else rules.MISSING,
            plan=self.json_file("migration-plan.json") if "plan" in needs else rules.MISSING,
        )

    def summary(self, manifest: dict[str, Any]) -> rules.Summary:
        checkpoints = checkpoints_of(manifest)
        step = rules.tag_step(str(checkpoints[-1])) if checkpoints else None
        meta = self.json_file(f"checkpoints/{step}.json") if step and _safe(step) else rules.MISSING
        return rules.summarize(
            phases_of(manifest),
            checkpoints,
            self.json_file("features.json"),
            self.json_file("migration-plan.json"),
            meta,
        )

    def checkpoint_meta_path(self, step: str) -> Path:
        return self.path / "checkpoints" / f"{step}.json"

    def write_checkpoint_meta(self, step: str, tag: str, created_at: str) -> None:
        meta = {"step_id": step, "tag": tag, "created_at": created_at}
        self._write(self.checkpoint_meta_path(step), json.dumps(meta, indent=2))

    def read_progress(self) -> str | None:
        """progress.md, None when absent; bytes that are not UTF-8 survive a rewrite."""
        try:
            return self.progress_path.read_text(encoding="utf-8", errors="surrogateescape")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise unavailable_file(f"read {self.progress_path}", exc) from exc

    def write_progress(self, text: str) -> None:
        self._write(self.progress_path, text, errors="surrogateescape")

    def _write(self, path: Path, text: str, errors: str = "strict") -> None:
        try:
            write_atomic(path, text.encode("utf-8", errors), mode=FILE_MODE)
        except OSError as exc:
            raise unavailable_file(f"write {path}", exc) from exc


def phases_of(manifest: dict[str, Any]) -> dict[str, Any]:
    phases = manifest.get("phases")
    return phases if isinstance(phases, dict) else {}


def checkpoints_of(manifest: dict[str, Any]) -> list[str]:
    checkpoints = manifest.get("checkpoints")
    return [str(tag) for tag in checkpoints] if isinstance(checkpoints, list) else []


def source_of(manifest: dict[str, Any]) -> str:
    """The codebase being migrated, as the engine finds it when it loads a migration
    (`source_info.path`), else the top-level `source_path` the CLI's resume reads."""
    info = manifest.get("source_info")
    path = info.get("path") if isinstance(info, dict) else None
    if isinstance(path, str) and path:
        return path
    other = manifest.get("source_path")
    return other if isinstance(other, str) else ""


def target_of(manifest: dict[str, Any]) -> str:
    info = manifest.get("target_info")
    target = info.get("target") if isinstance(info, dict) else info
    return target if isinstance(target, str) else ""


def _manifest_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    if "phases" in data and not isinstance(data["phases"], dict):
        return "phases is not an object"
    if "checkpoints" in data and not isinstance(data["checkpoints"], list):
        return "checkpoints is not a list"
    return None


def _safe(step: str) -> bool:
    """A step read from a manifest names a file only when it is a valid step id."""
    return rules.step_problem(step) is None
