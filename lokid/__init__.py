"""lokid: the single owner of a Loki Mode project's `.loki` state.

This package's top level stays import-light on purpose: the thin client
`lokictl` imports `lokid.wire` and `lokid.paths`, and must not pay for trio,
docker or watchfiles.
"""

__version__ = "0.1.0"
