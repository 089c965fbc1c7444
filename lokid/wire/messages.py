"""The three msgpack-RPC envelopes.

Array-like tagged Structs encode exactly as `[0, msgid, method, params]`,
`[1, msgid, error, result]` and `[2, method, params]`, so one typed decoder
validates the envelope and rejects anything else.
"""

from typing import Any

import msgspec

PROTOCOL_VERSION = 1

# What decoding untrusted bytes can raise: msgspec's DecodeError and ValidationError,
# but also UnicodeDecodeError for a string that is not UTF-8 (both are ValueErrors),
# and RecursionError for nesting deeper than the interpreter's stack.
UNDECODABLE = (ValueError, RecursionError)

EMPTY_MAP = msgspec.Raw(b"\x80")  # msgpack for {}


class Error(msgspec.Struct, omit_defaults=True):
    """`error` of a response: `{"code", "message", "data"?}`."""

    code: str
    message: str
    data: Any = None


class Request(msgspec.Struct, array_like=True, tag=0):
    msgid: int
    method: str
    # Left raw so each method decodes it straight into its own params type.
    params: msgspec.Raw = EMPTY_MAP


class Response(msgspec.Struct, array_like=True, tag=1):
    # None only for errors that belong to no request (an unparsable frame).
    msgid: int | None
    error: Error | None = None
    result: Any = None


class Notification(msgspec.Struct, array_like=True, tag=2):
    method: str
    params: Any = None


# What a client may send the daemon, and what the daemon sends a client.
ClientMessage = Request | Notification
ServerMessage = Response | Notification
