"""One error tree; each class carries its wire code.

    LokidError                 internal
    ├── InvalidRequest         invalid_request
    ├── ParseError             parse_error
    ├── MethodNotFound         method_not_found
    ├── InvalidParams          invalid_params
    ├── NotFound               not_found
    ├── Conflict               conflict   (a transition not allowed now)
    ├── Unavailable            unavailable (a dependency such as Docker is down)
    ├── Cancelled              cancelled
    └── TooLarge               too_large

Handlers raise these; the dispatcher turns them into error responses. Any other
exception becomes `internal` with a short id that is also logged, never a traceback.
"""

from typing import Any

from lokid.wire.codes import ErrorCode


class LokidError(Exception):
    code: ErrorCode = "internal"

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class InvalidRequest(LokidError):
    code = "invalid_request"


class ParseError(LokidError):
    code = "parse_error"


class MethodNotFound(LokidError):
    code = "method_not_found"


class InvalidParams(LokidError):
    code = "invalid_params"


class NotFound(LokidError):
    code = "not_found"


class Conflict(LokidError):
    code = "conflict"


class Unavailable(LokidError):
    code = "unavailable"


class Cancelled(LokidError):
    code = "cancelled"


class TooLarge(LokidError):
    code = "too_large"


def unavailable_file(what: str, exc: OSError) -> Unavailable:
    """An OS error on lokid's own files (read-only, disk full) as a clear client error."""
    return Unavailable(f"cannot {what}: {exc.strerror or exc}", {"errno": exc.errno})
