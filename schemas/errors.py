"""The error envelope users receive, ``{"error": {"message", "type", "param", "code"}}``.

It is built in exactly one place, :func:`error_body`, for NATS replies and HTTP responses alike.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
    "CLIENT_CODES",
    "CLIENT_ERRORS",
    "CLIENT_ERROR_BY_STATUS",
    "CLIENT_ERROR_FROM_500",
    "CLIENT_ERROR_OTHERWISE",
    "ErrorDetail",
    "ErrorEnvelope",
    "anthropic_error",
    "error_body",
    "status_type",
]


class ErrorDetail(msgspec.Struct):
    """OpenAI's error object."""

    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorEnvelope(msgspec.Struct):
    """``{"error": {...}}``."""

    error: ErrorDetail


_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


def status_type(status: int) -> str:
    """Return the OpenAI-style error ``type`` for an HTTP-like status."""
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


_encoder = msgspec.json.Encoder()


def error_body(status: int, code: str, message: str, param: str | None = None) -> bytes:
    """Encode an error envelope.

    Args:
        status: HTTP-like status; picks the error ``type``.
        code: machine-readable code (``model_not_found``, ``request_too_large`` ...).
        message: what went wrong, for a person.
        param: the offending request field, when there is one.

    Returns:
        The JSON bytes of ``{"error": {...}}``.
    """
    detail = ErrorDetail(message=message, type=status_type(status), code=code, param=param)
    return _encoder.encode(ErrorEnvelope(error=detail))


#: Our status -> Anthropic error ``type``.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, message: str, kind: str | None = None) -> bytes:
    """``{"type": "error", "error": {"type", "message"}}``; ``kind`` is the error ``type``
    when the upstream named one (``overloaded_error``), else it follows from ``status``."""
    kind = kind or ANTHROPIC_ERROR_TYPES.get(status, "api_error")
    return _encoder.encode({"type": "error", "error": {"type": kind, "message": message}})


#: The error tree of the producer clients (Python, TypeScript, Go): each class, its parent and
#: what it means. Every client names its errors so, and picks one by ``Llm-Status`` from
#: :data:`CLIENT_ERROR_BY_STATUS`; ``docs/asyncapi.json`` carries both (``x-client-errors``)
#: and the Go and TypeScript tables are generated from it.
CLIENT_ERRORS: dict[str, tuple[str | None, str]] = {
    "EdgeError": (None, "the root of every error the client raises"),
    "APIError": ("EdgeError", "a failure the broker answered (or the client inferred)"),
    "BadRequestError": ("APIError", "the request breaks the schema or a bound"),
    "AuthenticationError": ("APIError", "missing, unknown or revoked API key"),
    "BudgetExceeded": ("APIError", "the tenant spent its budget for the period"),
    "PermissionDeniedError": ("APIError", "the key may not do this"),
    "NotFoundError": ("APIError", "no such model, batch or file"),
    "ConflictError": ("APIError", "the object is in a state that refuses the operation"),
    "RateLimitError": ("APIError", "the tenant or the upstream is over its rate limit"),
    "InternalServerError": ("APIError", "the broker or the upstream failed"),
    "UnavailableError": ("APIError", "nobody can serve the request now; a later try may work"),
    "DeadlineError": ("APIError", "the time budget ran out, or no reply came in time"),
    "StreamError": ("EdgeError", "a stream's messages arrived out of order or incomplete"),
}
#: The class of each status; any other is :data:`CLIENT_ERROR_FROM_500` from 500 up, else
#: :data:`CLIENT_ERROR_OTHERWISE`.
CLIENT_ERROR_BY_STATUS: dict[int, str] = {
    400: "BadRequestError",
    401: "AuthenticationError",
    402: "BudgetExceeded",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    408: "DeadlineError",
    409: "ConflictError",
    413: "BadRequestError",
    422: "BadRequestError",
    429: "RateLimitError",
    431: "BadRequestError",
    503: "UnavailableError",
    504: "DeadlineError",
}
CLIENT_ERROR_FROM_500 = "InternalServerError"
CLIENT_ERROR_OTHERWISE = "APIError"
#: The codes a client gives the errors it infers without a reply, with their status: nobody
#: serves the subject (NATS no-responders), no reply in time, a body the NATS server would not
#: take (refused before it is published).
CLIENT_CODES: dict[str, int] = {
    "no_broker": 503,
    "deadline_exceeded": 504,
    "request_too_large": 413,
}
