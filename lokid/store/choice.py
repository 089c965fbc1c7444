"""Where a project's queue lives: SQLite in its own `.loki/lokid/lokid.db` (the default), or
a PostgreSQL database shared with other projects and other lokid instances.

Daemon-wide, `LOKID_STORE=postgresql://user@host:5432/db` (or `sqlite`); per project,
`.loki/config/queue-store.yaml` wins over it:

    url: postgresql://lokid@db.internal:5432/lokid   # or: sqlite
    name: acme-web    # the queue's name in that database (default: the folder's path)

Every lokid that serves the same `name` in the same database serves the same queue, so hosts
whose checkouts live at different paths give the project one `name`. A password never goes
in the project's file (it would travel with the repository): libpq reads it from
`PGPASSWORD`, `~/.pgpass` or `PGPASSFILE`, or from `LOKID_STORE` in lokid's environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from lokid.errors import ConfigError
from lokid.files.reading import CONFIG_FILE_MAX, read_file

CONFIG_PATH = Path("config") / "queue-store.yaml"
SCHEMES = ("postgresql", "postgres")


class _File(msgspec.Struct, forbid_unknown_fields=True):
    url: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class StoreChoice:
    url: str | None  # None: SQLite
    name: str  # the project's name in a shared database


def check_url(url: str, where: str) -> str | None:
    """`url` as a store: None for SQLite, the URL for PostgreSQL; else why not (ValueError,
    whose message never repeats the URL: it may hold a password)."""
    text = url.strip()
    if text in ("", "sqlite"):
        return None
    scheme = text.split(":", 1)[0].lower()
    if scheme not in SCHEMES or not text[len(scheme) :].startswith("://"):
        raise ValueError(f"{where} must be `sqlite` or a postgresql:// URL")
    return text


def has_password(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.password is not None or "password=" in (parts.query or "")


def choose(loki: Path, path: str, default: str) -> StoreChoice:
    """The store of the project whose `.loki` folder is `loki` (ConfigError: a bad file;
    FileProblem: one lokid may not read, or not a regular file)."""
    config = loki / CONFIG_PATH
    given = _File()
    data = read_file(config, CONFIG_FILE_MAX)  # FileProblem: one lokid cannot read
    if data is not None:
        try:
            given = msgspec.yaml.decode(data, type=_File)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ConfigError(f"{config}: {exc}") from exc
    if given.url is not None and has_password(given.url):
        raise ConfigError(
            f"{config}: `url` holds a password; keep it out of the project "
            "(PGPASSWORD, ~/.pgpass, or LOKID_STORE in lokid's environment)"
        )
    try:
        url = check_url(given.url if given.url is not None else default, _source(given, config))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    name = given.name if given.name else path
    return StoreChoice(url, name)


def _source(given: _File, config: Path) -> str:
    return f"{config}: `url`" if given.url is not None else "LOKID_STORE"
