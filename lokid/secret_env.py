"""The environment variables that hold secrets: one list for lokid and lokictl.

Their values never reach a log line, an event, an error or a reply (`lokid.log.redact`), and
they are the ones handed to a run's container when set (`run.start`; lokictl forwards its own
so a run gets the keys of the shell that asked for it). Standard library only.
"""

import os
from collections.abc import Mapping

SECRET_VARS = (
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "GOOGLE_API_KEY",
    "GITHUB_TOKEN",
    "GH_TOKEN",
)

# Shorter values are not worth mangling text for (and would mangle it everywhere).
MIN_SECRET_LEN = 4


def secrets_in(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The secret variables set in `env` (default: this process's), name -> value."""
    env = os.environ if env is None else env
    return {name: env[name] for name in SECRET_VARS if env.get(name)}


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    return [v for v in secrets_in(env).values() if len(v) >= MIN_SECRET_LEN]
