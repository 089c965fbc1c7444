"""Loki Mode's codebase migrations (`~/.loki/migrations/<id>/`), one concept a module.

    lock.py         the cross-process manifest lock (flock on manifest.json.lock)
    folder.py       a migration's files, read and written in Loki Mode's formats
    phases.py       start a phase, advance (gates inside the lock)
    progress.py     append a session to progress.md (the 50-session cap)
    checkpoints.py  git tags as checkpoints; rollback (git reset --hard)
    news.py         the events between two looks at a migration
    watcher.py      watchfiles on the migrations folder, present or not
    area.py         MigrationArea: what the daemon wires in

The rules themselves (ids, phase order, gates, summary, progress format) are
pure, in lokid.domain.migration.
"""

from lokid.migrations.area import MigrationArea, default_root

__all__ = ["MigrationArea", "default_root"]
