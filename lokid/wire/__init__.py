"""Wire protocol v1: message envelopes, framing and the typed params/results.

Imports only msgspec and the standard library, so every Python client reuses
these definitions. PROTOCOL.md is the contract; this package implements it.
"""

from lokid.wire.codes import ERROR_CODES, ErrorCode
from lokid.wire.framing import (
    DEFAULT_MAX_FRAME,
    HEADER,
    FrameDecoder,
    FrameTooLarge,
    encode_frame,
)
from lokid.wire.messages import (
    PROTOCOL_VERSION,
    Error,
    Notification,
    Request,
    Response,
)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "ERROR_CODES",
    "HEADER",
    "PROTOCOL_VERSION",
    "Error",
    "ErrorCode",
    "FrameDecoder",
    "FrameTooLarge",
    "Notification",
    "Request",
    "Response",
    "encode_frame",
]
