"""The dead-letter review log Loki Mode's reference asks for:
`.loki/logs/decisions/dlq-review-<YYYY-MM-DD>.md`, one entry per decision."""

import os
import time
from pathlib import Path

from lokid.wire.times import iso


def append_dlq_decision(
    loki: Path,
    when: float,
    task_id: str,
    action: str,
    task_type: str,
    last_error: str | None,
    note: str,
) -> Path:
    folder = loki / "logs" / "decisions"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"dlq-review-{time.strftime('%Y-%m-%d', time.gmtime(when))}.md"
    task_id, task_type = _one_line(task_id), _one_line(task_type)
    entry = (
        f"\n## {iso(when)} {action} {task_id}\n\n"
        f"- task: `{task_id}` ({task_type})\n"
        f"- action: {action}\n"
        f"- last error: {_one_line(last_error) if last_error else 'none'}\n"
        f"- note: {_one_line(note) if note else 'none'}\n"
    )
    # O_APPEND: concurrent appenders interleave whole entries, never bytes.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, entry.encode())
    finally:
        os.close(fd)
    return path


def _one_line(text: str) -> str:
    """One line, whatever the text: line breaks (any Unicode one) written as `\\n`, so a
    task's id, type or note can never start an entry of its own."""
    return " ".join(text.encode("unicode_escape").decode("ascii").split())
