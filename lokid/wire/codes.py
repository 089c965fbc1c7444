"""The closed set of error codes a response may carry (PROTOCOL.md, "Errors")."""

from typing import Literal

ErrorCode = Literal[
    "parse_error",
    "invalid_request",
    "method_not_found",
    "invalid_params",
    "not_found",
    "conflict",
    "unavailable",
    "cancelled",
    "too_large",
    "internal",
]

ERROR_CODES: tuple[str, ...] = ErrorCode.__args__  # type: ignore[attr-defined]
