"""Broker errors. Every failure a caller can see is a :class:`BrokerError`:

    BrokerError(status, code, message, param, retry_after)
     ├── InvalidRequest      400  (bad JSON, schema violation; ``param`` names the field)
     │    ├── PiiBlocked     400  (the tenant blocks personal data and the request has some)
     │    └── ContextLengthExceeded  400  (longer than every deployment's context window, and
     │                             no ``context_fallback`` takes it)
     ├── Unauthorized        401  (missing, unknown or revoked API key)
     │    └── InvalidToken   401  (a bearer JWT that fails verification: signature, iss, aud, exp …)
     ├── BudgetExceeded      402  (the tenant spent its budget for the period)
     ├── Forbidden           403  (a known caller asks for what it may not have)
     │    └── ModelNotAllowed 403 (the model is outside the key's or the tenant's list)
     ├── ModelNotFound       404
     ├── ResponseNotFound    404  (a stored response the caller's tenant does not have)
     ├── RequestTooLarge     413
     ├── HeaderTooLarge      431  (a header over its bound: nothing is forwarded)
     ├── RateLimited         429  (tenant over its rpm/tpm; ``x-ratelimit-*`` headers)
     ├── NoProvider          503  (no worker subscribed: NATS no-responders)
     │    └── AllDeploymentsOpen  503  (every deployment and fallback open or over its limits)
     ├── Overloaded          503  (the broker's queue is full)
     │    └── AtCapacity     503  (no capacity frees in time for the request: its wait would
     │                             pass its deadline or ``admission.max_wait_s``)
     ├── KeysUnavailable     503  (run-time keys or the JWT issuer's keys could not be read:
     │                             closed, not open)
     ├── ResponsesStoreDown  503  (JetStream did not answer for stored responses)
     ├── DeadlineExceeded    504
     └── UpstreamFailed      the worker's status and envelope (a failure mid-stream)

:meth:`BrokerError.envelope` is the one place its reply body is built.
"""

from __future__ import annotations

import re

import msgspec

from schemas import error_body, headers
from schemas.codec import TOO_DEEP

__all__ = [
    "AllDeploymentsOpen",
    "AtCapacity",
    "BrokerError",
    "BrokerStopping",
    "BudgetExceeded",
    "ContextLengthExceeded",
    "DeadlineExceeded",
    "Forbidden",
    "HeaderTooLarge",
    "InvalidRequest",
    "InvalidToken",
    "KeysUnavailable",
    "ModelNotAllowed",
    "ModelNotFound",
    "NoProvider",
    "Overloaded",
    "PiiBlocked",
    "RateLimited",
    "RequestTooLarge",
    "ResponseNotFound",
    "ResponsesStoreDown",
    "Unauthorized",
    "UpstreamFailed",
    "from_decode_error",
]


class BrokerError(Exception):
    """A failure with an HTTP-like status and an OpenAI-style code.

    Attributes:
        status: HTTP-like status (also sent as the ``Llm-Status`` header).
        code: machine-readable code.
        message: for a person.
        param: the request field at fault, if any.
        retry_after: seconds after which a retry may succeed, if known.
    """

    status = 500
    code = "internal_error"

    def __init__(
        self, message: str, *, param: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after

    def envelope(self) -> bytes:
        """The ``{"error": {...}}`` body for this failure."""
        return error_body(self.status, self.code, self.message, self.param)

    @property
    def extra_headers(self) -> dict[str, str]:
        """Reply headers this failure adds (``Retry-After`` ...)."""
        if self.retry_after is None:
            return {}
        return {headers.RETRY_AFTER: f"{self.retry_after:g}"}


class InvalidRequest(BrokerError):
    """The body is not valid JSON or breaks the chat-completions contract."""

    status = 400
    code = "invalid_request"


class PiiBlocked(InvalidRequest):
    """The tenant blocks requests containing PII, and this one does."""

    code = "pii_detected"


class ContextLengthExceeded(InvalidRequest):
    """The request is surely longer than the context window of every deployment that could
    serve it (refused before any upstream call: never cut short in silence)."""

    code = "context_length_exceeded"


class Unauthorized(BrokerError):
    """No valid API key."""

    status = 401
    code = "invalid_api_key"


class InvalidToken(Unauthorized):
    """A bearer JWT that fails verification (the message says which check)."""

    code = "invalid_token"


class Forbidden(BrokerError):
    """The caller is known, and may not do this."""

    status = 403
    code = "forbidden"


class ModelNotAllowed(Forbidden):
    """The model is outside the key's (or its tenant's) model list."""

    code = "model_not_allowed"


class BudgetExceeded(BrokerError):
    """The tenant spent its budget for the period (402, so clients do not retry blindly)."""

    status = 402
    code = "budget_exceeded"


class RateLimited(BrokerError):
    """The tenant is over its limits; ``extra_headers`` carries the ``x-ratelimit-*`` set."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, headers: dict[str, str]) -> None:
        super().__init__(message, retry_after=retry_after)
        self._headers = headers

    @property
    def extra_headers(self) -> dict[str, str]:
        """``Retry-After`` and the rate-limit headers."""
        return {**super().extra_headers, **self._headers}


class ModelNotFound(BrokerError):
    """No model or alias of that name is configured."""

    status = 404
    code = "model_not_found"


class ResponseNotFound(BrokerError):
    """A stored response that does not exist, expired, or belongs to another tenant."""

    status = 404
    code = "not_found"


class RequestTooLarge(BrokerError):
    """The body is over the configured or transport limit."""

    status = 413
    code = "request_too_large"


class HeaderTooLarge(BrokerError):
    """A request header is over its bound (``schemas.headers.MAX_VALUE_BYTES``)."""

    status = 431
    code = "request_header_fields_too_large"


class NoProvider(BrokerError):
    """Nothing serves the subject the request needs."""

    status = 503
    code = "no_provider_available"


class AllDeploymentsOpen(NoProvider):
    """Every deployment of the model and its fallbacks is open (or over its limits)."""

    code = "all_deployments_unavailable"


class Overloaded(BrokerError):
    """The broker cannot take the request: as many wait in it as ``admission.max_queued``."""

    status = 503
    code = "overloaded"


class AtCapacity(Overloaded):
    """The capacity the request needs (a deployment's, the broker's) does not free before the
    request would have to stop waiting; ``Retry-After`` is when it is expected to."""

    code = "at_capacity"


class KeysUnavailable(BrokerError):
    """The broker keeps keys in Redis and could not read them yet: it refuses requests rather
    than serve them without a key (fail closed)."""

    status = 503
    code = "keys_unavailable"


class BrokerStopping(BrokerError):
    """The broker is stopping: what it still served for the caller ends (another broker
    serves it when asked again)."""

    status = 503
    code = "broker_stopping"


class ResponsesStoreDown(BrokerError):
    """The stored responses could not be read or written (JetStream did not answer)."""

    status = 503
    code = "store_unavailable"


class DeadlineExceeded(BrokerError):
    """The request's time budget ran out."""

    status = 504
    code = "deadline_exceeded"


_AT = re.compile(r"at `\$\.?([^`]*)`")
_MISSING = re.compile(r"required field `([^`]+)`")


def from_decode_error(exc: msgspec.MsgspecError) -> InvalidRequest:
    """Map a msgspec decode/validation failure to a 400 naming the field.

    ``Expected `float` <= 2.0 - at `$.temperature``` becomes ``param="temperature"``;
    ``Object missing required field `role` - at `$.messages[0]``` becomes
    ``param="messages[0].role"``.
    """
    text = str(exc)
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        if text == TOO_DEEP:
            return InvalidRequest(f"request body is refused: {TOO_DEEP}")
        return InvalidRequest(f"request body is not valid JSON: {text}")
    at, missing = _AT.search(text), _MISSING.search(text)
    param = at.group(1) if at else ""
    if missing:
        param = f"{param}.{missing.group(1)}" if param else missing.group(1)
    return InvalidRequest(f"invalid request: {text}", param=param or None)


class UpstreamFailed(BrokerError):
    """A provider worker reported a failure; its status, envelope and headers are kept, and
    ``code`` is the worker's code of it (``Llm-Error-Code``) when it sent one."""

    code = "upstream_error"

    def __init__(
        self, status: int, body: bytes, extra_headers: dict[str, str], code: str | None = None
    ) -> None:
        super().__init__(f"upstream failed with status {status}")
        self.status = status
        if code:
            self.code = code
        self._body = body
        self._extra = extra_headers

    def envelope(self) -> bytes:
        """The worker's envelope, unchanged."""
        return self._body

    @property
    def extra_headers(self) -> dict[str, str]:
        """The worker's ``Retry-After`` / ``Llm-Retryable``."""
        return self._extra
