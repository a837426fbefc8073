"""The errors :class:`~edge_client.client.EdgeClient` raises, keyed by ``Llm-Status`` and code.

Names follow the ``openai`` SDK where it has one::

    EdgeError
     ├── APIError(status, code, message, param, request_id, retry_after)
     │    ├── BadRequestError          400, 413, 431 (``param`` names the field at fault)
     │    ├── AuthenticationError      401
     │    ├── BudgetExceeded           402
     │    ├── PermissionDeniedError    403
     │    ├── NotFoundError            404
     │    ├── ConflictError            409
     │    ├── RateLimitError           429 (``retry_after`` seconds, when the broker said)
     │    ├── InternalServerError      500, 502 and other 5xx
     │    ├── UnavailableError         503 (no broker or worker, store electing a leader)
     │    └── DeadlineError            504, or no reply within the call's deadline
     └── StreamError                  a stream arrived out of order

:func:`from_reply` is the one place a reply becomes an exception.
"""

from __future__ import annotations

import contextlib

import msgspec

from schemas import ErrorEnvelope, headers
from schemas.errors import CLIENT_ERROR_BY_STATUS, CLIENT_ERROR_FROM_500, CLIENT_ERROR_OTHERWISE

__all__ = [
    "CLASSES",
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceeded",
    "ConflictError",
    "DeadlineError",
    "EdgeError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "StreamError",
    "UnavailableError",
    "from_reply",
]

_envelope = msgspec.json.Decoder(ErrorEnvelope)


class EdgeError(Exception):
    """The root of every error the client raises."""


class StreamError(EdgeError):
    """A stream's messages arrived out of order or incomplete."""


class APIError(EdgeError):
    """A failure the broker answered (or the client inferred), with its context.

    Attributes:
        status: the ``Llm-Status`` (HTTP-like).
        code: the envelope's machine-readable code (``model_not_found`` ...), if any.
        message: the envelope's message, for a person.
        param: the request field at fault, if any.
        request_id: the request's ``X-Request-Id``.
        retry_after: seconds the broker asked to wait before another try, if it said.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status, self.code, self.message, self.param = status, code, message, param
        self.request_id, self.retry_after = request_id, retry_after
        where = f" (param {param})" if param else ""
        super().__init__(f"{status} {code or 'error'}: {message}{where}")


class BadRequestError(APIError):
    """The request breaks the schema or a bound (400, 413, 431)."""


class AuthenticationError(APIError):
    """Missing, unknown or revoked API key (401)."""


class BudgetExceeded(APIError):
    """The tenant spent its budget for the period (402)."""


class PermissionDeniedError(APIError):
    """The key may not do this (403)."""


class NotFoundError(APIError):
    """No such model, batch or file (404)."""


class ConflictError(APIError):
    """The object is in a state that refuses the operation (409)."""


class RateLimitError(APIError):
    """The tenant or the upstream is over its rate limit (429)."""


class InternalServerError(APIError):
    """The broker or the upstream failed (5xx other than 503 and 504)."""


class UnavailableError(APIError):
    """Nobody can serve the request now; a later try may work (503)."""


class DeadlineError(APIError):
    """The request's time budget ran out (504, or no reply in time)."""


#: Every class of the tree, by name (the contract's names: schemas/errors.py).
CLASSES: dict[str, type[EdgeError]] = {
    cls.__name__: cls
    for cls in (
        EdgeError,
        APIError,
        BadRequestError,
        AuthenticationError,
        BudgetExceeded,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        RateLimitError,
        InternalServerError,
        UnavailableError,
        DeadlineError,
        StreamError,
    )
}


def _api_class(name: str) -> type[APIError]:
    cls = CLASSES[name]
    assert issubclass(cls, APIError), name
    return cls


#: The class of each status, as the contract says (others: InternalServerError from 500 up,
#: else APIError).
_BY_STATUS: dict[int, type[APIError]] = {
    status: _api_class(name) for status, name in CLIENT_ERROR_BY_STATUS.items()
}
_FROM_500, _OTHERWISE = _api_class(CLIENT_ERROR_FROM_500), _api_class(CLIENT_ERROR_OTHERWISE)


def _kind(status: int) -> type[APIError]:
    return _BY_STATUS.get(status, _FROM_500 if status >= 500 else _OTHERWISE)


def from_reply(status: int, body: bytes, reply_headers: dict[str, str] | None = None) -> APIError:
    """The exception for a failed reply: its class from the status, its context from the
    error envelope (OpenAI's, or Anthropic's ``{"type": "error", "error": {...}}``)."""
    hdrs = reply_headers or {}
    code: str | None = None
    param: str | None = None
    message = body[:200].decode(errors="replace")
    try:
        detail = _envelope.decode(body).error
        code, param, message = detail.code, detail.param, detail.message
    except msgspec.MsgspecError:
        pass
    retry_after: float | None = None
    with contextlib.suppress(ValueError, TypeError):
        retry_after = float(hdrs[headers.RETRY_AFTER]) if headers.RETRY_AFTER in hdrs else None
    return _kind(status)(
        status,
        message,
        code=code,
        param=param,
        request_id=hdrs.get(headers.REQUEST_ID),
        retry_after=retry_after,
    )
