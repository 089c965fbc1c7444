"""Loki Mode's on-disk files, read and written the way its own tools expect."""
