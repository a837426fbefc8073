"""A request inside the broker, and its reply: the records every wing reads.

:class:`Prepared` is made once per request by :class:`~broker.prepare.RequestPreparer`
(decoded, validated, its model and cache key known); :class:`Reply` is a whole answer or
an error on its way out; :class:`Piece` is one message of a streamed answer. :class:`Call` is
what the wings that do not care which API a request came in on (routing, forwarding,
metering, recording) read of one: a chat or Messages request's :class:`Prepared` and an
embeddings call (:mod:`broker.embeddings.call`) alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from blake3 import blake3

from broker.cache.directives import CacheDirectives
from broker.cache.key import KeyBasis, Keyed
from broker.errors import BrokerError
from broker.tenancy.grants import Grant
from broker.tenancy.tenants import ANONYMOUS, TenantConfig
from broker.upstream.deployments import ModelConfig
from schemas import ChatRequest, subjects
from schemas.api import Api
from schemas.responses import ResponsesRequest

__all__ = [
    "DEFAULT_TENANT",
    "Call",
    "Piece",
    "Prepared",
    "Reply",
    "Requested",
    "error_reply",
]

DEFAULT_TENANT = subjects.DEFAULT_TENANT
#: A decoded request of any API the pipeline serves (a Responses request is keyed over its
#: whole body, so the cache's own readers never see one).
Requested = Keyed | ResponsesRequest


@dataclass(slots=True)
class Reply:
    """A whole reply: HTTP-like status, body, headers (provider, deployment ...).

    ``splits`` is set for an answer assembled from a stream: its chunk boundaries (see
    :class:`~broker.cache.response.CachedReply`), kept with its cache entry. ``upstream_s``
    is the time its call spent waiting for provider workers (every attempt), for an answer a
    provider gave. ``refused`` is the 200 answer that refused the request for its content
    before a content-policy fallback gave this one: its provider bills it, so it is priced and
    charged with this one (:meth:`~broker.tenancy.meter.Meter.price`).
    """

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    splits: list[list[int]] | None = None
    upstream_s: float = 0.0
    refused: Reply | None = None


class Call(Protocol):
    """A request as routing, forwarding, metering and recording read it, whatever its API."""

    @property
    def data(self) -> bytes:
        """The body a provider worker receives."""
        ...

    @property
    def model(self) -> ModelConfig:
        """The configured model it resolved to."""
        ...

    @property
    def request_id(self) -> str:
        """Its correlation id."""
        ...

    @property
    def deadline(self) -> float:
        """When its time budget runs out (the event loop's clock)."""
        ...

    @property
    def directives(self) -> CacheDirectives:
        """Its ``Cache-Control``."""
        ...

    @property
    def trace(self) -> str | None:
        """Its W3C trace context."""
        ...

    @property
    def tenant(self) -> TenantConfig:
        """Who sent it."""
        ...

    @property
    def grant(self) -> Grant | None:
        """Its key's own model list and limits, under its tenant's."""
        ...

    @property
    def api(self) -> Api:
        """What its body speaks (``Llm-Api`` to the worker)."""
        ...

    @property
    def upstream_headers(self) -> dict[str, str]:
        """The caller's headers passed on to the upstream."""
        ...

    @property
    def idempotent(self) -> bool:
        """Whether its attempts share one upstream call (``workers.once``)."""
        ...

    @property
    def stream(self) -> bool:
        """Whether its caller asked for a stream."""
        ...

    @property
    def priority(self) -> int:
        """Its class while it waits for capacity (:mod:`broker.admission.classes`)."""
        ...

    #: How long it waited for capacity so far (``Llm-Queue-Ms``).
    queued_s: float
    #: The caller's reply subject: only a cancel naming it stops the request.
    owner: str

    def digest(self) -> bytes:
        """What tells its body from another's (the repeat and once keys)."""
        ...

    def estimate(self, completion_default: int = 0) -> tuple[int, int]:
        """(prompt, completion) tokens guessed before any call."""
        ...


@dataclass(frozen=True, slots=True)
class Piece:
    """One message of a streamed answer, as the provider worker sent it: a
    ``chat.completion.chunk``, or the data of an Anthropic stream event named by ``event``.

    The body is relayed to the caller as it came (fields the broker does not know included);
    the broker decodes it only to keep the answer it adds up to.
    """

    data: bytes
    event: str = ""


@dataclass(slots=True)
class Prepared:
    """A decoded, validated request and what the broker decided about it.

    Attributes:
        api: what the body speaks (and so what its answer is).
        key: cache key, or ``None`` when the request is not cached at all.
        basis: what the key was made of besides ``request`` (the semantic tier reads it).
        upstream_headers: the caller's headers passed on to the upstream
            (:data:`schemas.headers.UPSTREAM_HEADERS`).
    """

    data: bytes
    request: Requested
    model: ModelConfig
    request_id: str
    deadline: float
    key: str | None
    directives: CacheDirectives
    trace: str | None = None
    tenant: TenantConfig = ANONYMOUS
    grant: Grant | None = None  # the key's own model list and limits, under the tenant's
    restore: dict[str, str] | None = None  # placeholder -> value, for tenants with pii_restore
    owner: str = ""  # the caller's reply subject: only a cancel naming it stops the request
    idempotent: bool = False  # its caller retries it under this request id (workers.once)
    priority: int = 1  # its class while it waits for capacity (broker.admission.classes)
    queued_s: float = 0.0  # how long it waited for capacity so far (Llm-Queue-Ms)
    counted: bool = False  # counted in its rate limits when accepted (a background run's)
    api: Api = Api.CHAT
    basis: KeyBasis = field(default_factory=KeyBasis)
    upstream_headers: dict[str, str] = field(default_factory=dict)
    _digest: bytes | None = field(default=None, repr=False)

    def digest(self) -> bytes:
        """What tells this request's body from another's, for the repeat and once keys: the
        cache key's digest when it has one (it covers every field that can change the
        answer), else the body's, computed once (a 4 MiB body hashed twice more cost 17 %
        of the miss path)."""
        if self._digest is None:
            key = self.key
            self._digest = (
                bytes.fromhex(key.rpartition(":")[2])
                if key is not None
                else blake3(self.data).digest()
            )
        return self._digest

    @property
    def stream(self) -> bool:
        """Whether the caller asked for a stream (a token count is always whole)."""
        return self.api is not Api.COUNT_TOKENS and bool(self.request.stream)

    @property
    def include_usage(self) -> bool:
        """Whether the caller asked for a final usage chunk (chat completions only: an
        Anthropic stream carries its usage in its events)."""
        request = self.request
        if not isinstance(request, ChatRequest):
            return False
        options = request.stream_options
        return bool(options and options.include_usage)

    def estimate(self, completion_default: int = 0) -> tuple[int, int]:
        """(prompt, completion) tokens guessed before any call.

        The prompt at 4 bytes a token; the completion at the request's cap, else
        ``completion_default`` (rate limits count 0 and settle later; cost routing guesses).
        """
        request = self.request
        cap = request.max_tokens or completion_default
        if isinstance(request, ChatRequest):
            cap = request.max_completion_tokens or cap
        return len(self.data) // 4, cap

    @property
    def reads_cache(self) -> bool:
        """Whether a cached answer may serve this request."""
        return self.key is not None and not self.directives.no_cache


def error_reply(exc: BrokerError) -> Reply:
    """The reply for a broker error."""
    return Reply(exc.status, exc.envelope(), exc.extra_headers)
