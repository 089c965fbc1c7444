"""Failures as an agent sees them: lokid's codes and messages, unchanged, one line.

    DaemonError        lokid answered with an error: `code: message` as lokid wrote it
    LokidUnavailable   lokid not running (spawn off), or the connection lost: `unavailable`
    NoProject          no project given or found: `invalid_params`, saying how to fix it
    BadArguments       arguments the bridge refuses before lokid sees them: `invalid_params`

A tool reports them as an error result (`isError`), which the model reads and can act
on; a resource read, which has no such result, as an MCP protocol error.
"""

from __future__ import annotations

import mcp_types as types
from mcp.shared.exceptions import MCPError

from lokictl import DaemonError
from lokid.mcp.link import LokidUnavailable
from lokid.mcp.project import NoProject


class BadArguments(Exception):
    """Tool arguments refused by the bridge itself (an option it does not offer)."""


# What a handler catches and turns into an answer; anything else is a bug in the bridge.
EXPECTED = (DaemonError, LokidUnavailable, NoProject, BadArguments)


def describe(exc: BaseException) -> tuple[str, str]:
    """(code, message) in lokid's vocabulary."""
    if isinstance(exc, DaemonError):
        return exc.code, exc.message
    if isinstance(exc, LokidUnavailable):
        return "unavailable", str(exc)
    if isinstance(exc, NoProject | BadArguments):
        return "invalid_params", str(exc)
    return "internal", f"{type(exc).__name__}: {exc}"


def text(exc: BaseException) -> str:
    code, message = describe(exc)
    return f"{code}: {message}"


def tool_error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


def as_tool_error(exc: BaseException) -> types.CallToolResult:
    return tool_error(text(exc))


def as_protocol_error(exc: BaseException) -> MCPError:
    """For requests that have no error result (resources/read, resources/subscribe)."""
    code, _ = describe(exc)
    number = (
        types.INVALID_PARAMS if code in ("invalid_params", "not_found") else types.INTERNAL_ERROR
    )
    return MCPError(number, text(exc))
