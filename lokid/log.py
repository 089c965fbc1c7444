"""Logging: one line per event on stderr, secrets redacted before anything is written."""

import logging
import sys
import time

from lokid.secret_env import secret_values

REDACTED = "[redacted]"


def redact(text: str, secrets: list[str] | None = None) -> str:
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, REDACTED)
    return text


class OneLineFormatter(logging.Formatter):
    """`2026-11-21T05:34:24.123Z INFO lokid.server: message`, tracebacks folded onto the line."""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._secrets = secret_values()

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + (
            f".{int(record.msecs):03d}Z"
        )

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return redact(text.replace("\r", "\\r").replace("\n", " | "), self._secrets)


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter())
    root = logging.getLogger("lokid")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
