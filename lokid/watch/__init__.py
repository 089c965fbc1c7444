"""Watching `.loki` folders: one watchfiles watcher for every project, and what each
path that changes means."""
