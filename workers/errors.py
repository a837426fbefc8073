"""Provider errors: one exception with typed context, built by each adapter in one function.

    ProviderError(provider, kind, status, message, retryable, retry_after)

``kind`` says what went wrong in provider-neutral terms; ``status`` is the status the user sees.
Transport failures of the upstream client (:mod:`workers.h1`) are mapped here and nowhere
else, and so is an answer that is not the one asked for (:class:`UnexpectedBody`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable

from workers.h1.errors import TransportError, TransportTimeout

__all__ = [
    "CannotCarry",
    "ErrorKind",
    "ProviderError",
    "ReplyTooLarge",
    "UnexpectedBody",
    "kind_for_status",
    "refined",
    "transport_error",
]


class ErrorKind(enum.StrEnum):
    """Provider-neutral failure classes; retryability follows from the kind."""

    AUTHENTICATION = "authentication"
    BAD_REQUEST = "bad_request"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    INVALID_RESPONSE = "invalid_response"
    #: The prompt (with the answer asked for) is over the model's context window.
    CONTEXT_LENGTH = "context_length_exceeded"
    #: The provider refused the request for its content (a safety system, a guardrail).
    CONTENT_POLICY = "content_policy_violation"

    @property
    def retryable(self) -> bool:
        """Whether another attempt (here or elsewhere) may succeed."""
        return self in _RETRYABLE

    @property
    def user_status(self) -> int:
        """The status the caller sees: their own mistakes pass through, the rest is ours."""
        return _USER_STATUS.get(self, 502)


#: An invalid response (a 200 that is not a completion, a stream that is not an event stream or
#: ends without its terminator) is the deployment's fault, like a 5xx: another may answer.
_RETRYABLE = frozenset(
    {
        ErrorKind.RATE_LIMITED,
        ErrorKind.UNAVAILABLE,
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECTION,
        ErrorKind.INVALID_RESPONSE,
    }
)
_USER_STATUS = {
    ErrorKind.BAD_REQUEST: 400,
    ErrorKind.CONTEXT_LENGTH: 400,
    ErrorKind.CONTENT_POLICY: 400,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.TIMEOUT: 504,
}


def kind_for_status(status: int) -> ErrorKind:
    """Classify an upstream HTTP status."""
    match status:
        case 401 | 403:
            return ErrorKind.AUTHENTICATION
        case 400 | 404 | 409 | 413 | 422:
            return ErrorKind.BAD_REQUEST
        case 408:
            return ErrorKind.TIMEOUT
        case 429:
            return ErrorKind.RATE_LIMITED
        case _:
            return ErrorKind.UNAVAILABLE


#: How providers word a prompt over the context window in a 400: OpenAI ("This model's
#: maximum context length is ..."; code ``context_length_exceeded``, also vLLM's wording),
#: Anthropic ("prompt is too long: 210000 tokens > 200000 maximum", "input length and
#: `max_tokens` exceed context limit"), Gemini ("The input token count (...) exceeds the
#: maximum number of tokens allowed"), Bedrock ("Input is too long for requested model",
#: "too many input tokens").
_CONTEXT_LENGTH = re.compile(
    r"context[_ ]length|context window|maximum context|exceeds? context limit"
    r"|prompt is too long|input is too long|too many (?:input )?tokens"
    r"|input token count",
    re.IGNORECASE,
)
#: ... and a refusal for content: OpenAI's ``content_policy_violation`` ("rejected as a result
#: of our safety system"), Azure's ``content_filter`` ("... content management policy"),
#: Bedrock's guardrails.
_CONTENT_POLICY = re.compile(
    r"content[_ ](?:policy|filter|management policy)|safety system|guardrail",
    re.IGNORECASE,
)
#: The statuses a provider refuses a request's content with.
_REFUSING = frozenset({400, 413, 422})


class ProviderError(Exception):
    """An upstream call failed.

    Attributes:
        provider: configured provider name.
        kind: what class of failure it was.
        upstream_status: the upstream HTTP status, if there was a response.
        message: the provider's message (never containing our credentials).
        retry_after: seconds the provider asked us to wait, if it said.
        upstream_type: the provider's own name for the error (Anthropic's
            ``overloaded_error`` ...), passed on to callers of the same API.
    """

    def __init__(
        self,
        provider: str,
        kind: ErrorKind,
        message: str,
        *,
        upstream_status: int | None = None,
        retry_after: float | None = None,
        upstream_type: str | None = None,
    ) -> None:
        self.provider = provider
        self.kind = kind
        self.message = message
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.upstream_type = upstream_type
        where = f" (HTTP {upstream_status})" if upstream_status else ""
        super().__init__(f"{provider}: {kind.value}{where}: {message}")

    @property
    def retryable(self) -> bool:
        """Whether another attempt may succeed."""
        return self.kind.retryable

    @property
    def status(self) -> int:
        """The HTTP-like status for the caller."""
        return self.kind.user_status


def refined(error: ProviderError) -> ProviderError:
    """``error`` with a refusal the provider worded (not coded) told apart: a 400 saying the
    prompt is over the context window is ``context_length``, one saying the content was
    refused is ``content_policy`` (the broker falls back on either: docs/routing.md). Every
    provider's error passes here, so an adapter maps its codes and leaves the wording here."""
    if error.kind is not ErrorKind.BAD_REQUEST or error.upstream_status not in _REFUSING:
        return error
    if _CONTEXT_LENGTH.search(error.message):
        error.kind = ErrorKind.CONTEXT_LENGTH
    elif _CONTENT_POLICY.search(error.message):
        error.kind = ErrorKind.CONTENT_POLICY
    return error


class ReplyTooLarge(Exception):
    """An answer, or one message of a stream, over the NATS server's ``max_payload`` (the
    server would close the connection that published it). Not the upstream's failure, and no
    other attempt would make it smaller: answered with a final 502 ``reply_too_large``.

    Attributes:
        size: the message's payload size in bytes.
    """

    code = "reply_too_large"

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__(f"the provider's answer ({size} bytes) is over the NATS max_payload")


class CannotCarry(ValueError):
    """A request field the API it is translated to has no counterpart for (a translation
    never drops one in silence); the adapter answers it with a 400 naming the field.

    Attributes:
        field: where it is (``messages[1].content[0].type``, ``thinking`` ...).
    """

    def __init__(self, field: str, why: str) -> None:
        self.field = field
        super().__init__(f"{field}: {why}")

    def refusal(self, provider: str, api: str) -> ProviderError:
        """The 400 for it, naming the field and why the deployment cannot take it."""
        message = (
            f"{self}: provider `{provider}` serves this model through {api}, which cannot carry it"
        )
        return ProviderError(provider, ErrorKind.BAD_REQUEST, message)


class UnexpectedBody(Exception):
    """A 200 that is not the answer asked for: an HTML page or JSON where an event stream was
    expected, or a stream that closed without its terminator (a partial answer)."""


def transport_error(
    provider: str, failure: Exception, scrub: Callable[[str], str] = str
) -> ProviderError:
    """A failure without an HTTP error response: timeout, connection, or an unreadable body
    (``scrub`` takes the adapter's secrets out of the message)."""
    if isinstance(failure, TransportTimeout):  # connect, pool wait or read
        return ProviderError(provider, ErrorKind.TIMEOUT, scrub("upstream timed out"))
    if isinstance(failure, TransportError):  # refused, reset, truncated body ...
        message = f"{type(failure).__name__}: {failure}"
        return ProviderError(provider, ErrorKind.CONNECTION, scrub(message))
    if isinstance(failure, UnexpectedBody):
        return ProviderError(provider, ErrorKind.INVALID_RESPONSE, scrub(str(failure)))
    return ProviderError(
        provider, ErrorKind.INVALID_RESPONSE, scrub(f"unreadable upstream response: {failure}")
    )
