"""The error envelope users receive, ``{"error": {"message", "type", "param", "code"}}``.

It is built in exactly one place, :func:`error_body`, for NATS replies and HTTP responses alike.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
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
