"""`lokid mcp`: lokid's queue, breakers and runs as Model Context Protocol tools.

A bridge for coding agents: an MCP server over stdio (the official SDK, the `mcp` extra)
that is a client of lokid's socket, exactly like lokictl (PROTOCOL.md is its contract).
This module is the command-line face only and imports nothing heavy, so `lokid --help`
never pays for the SDK. The rooms behind it, one concept each:

    project.py    which project the bridge serves (`--project`, else found upward)
    link.py       lokid's socket: blocking lokictl clients, run in worker threads
    errors.py     lokid's error codes as MCP tool errors and protocol errors
    schemas.py    JSON Schemas derived from the wire's msgspec types
    tools.py      the lokid tools (queue, dead letters, breakers, project, runs)
    dropin.py     Loki Mode's five task tools by their own names, backed by the queue
    resources.py  status and task lists as resources, updated from lokid's events
    server.py     the SDK's low-level Server wired to all of the above, over stdio
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `mcp` subcommand and its options (lokid's cli calls this)."""
    mcp = sub.add_parser(
        "mcp",
        help="serve the queue to coding agents over MCP (stdio)",
        description="An MCP server over stdio for coding agents: lokid's queue, breakers "
        "and runs as tools, status and task lists as resources. Needs the `mcp` extra.",
    )
    mcp.add_argument(
        "--project",
        help="the project folder (default: the nearest folder with .loki/ at or above the "
        "working folder)",
    )
    mcp.add_argument("--socket", help="lokid's socket (default: as lokictl finds it)")
    mcp.add_argument(
        "--no-spawn",
        action="store_true",
        default=os.environ.get("LOKICTL_NO_SPAWN") == "1",
        help="do not start lokid when it is not running (env LOKICTL_NO_SPAWN=1)",
    )
    mcp.add_argument(
        "--agent",
        default=f"mcp-{os.getpid()}",
        help="the agent name leases are taken under when a tool call names none "
        "(default: mcp-<pid>, one per server)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until the client closes stdin; a missing SDK or a bad socket path is one line."""
    try:
        import mcp  # noqa: F401 - the SDK (an absolute import, not this package)
    except ImportError:
        print("lokid mcp needs the MCP SDK: pip install 'lokid[mcp]'", file=sys.stderr)
        return 1
    from lokid.mcp.server import Settings, serve
    from lokid.paths import UnsafePath

    try:
        settings = Settings.from_args(args)
    except UnsafePath as exc:
        print(f"lokid mcp: {exc}", file=sys.stderr)
        return 1
    serve(settings)
    return 0
