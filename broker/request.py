"""A request inside the broker, and its reply: the records every wing reads.

:class:`Prepared` is made once per request by :class:`~broker.prepare.RequestPreparer`
(decoded, validated, its model and cache key known); :class:`Reply` is a whole answer or
an error on its way out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blake3 import blake3

from broker.cache.directives import CacheDirectives
from broker.errors import BrokerError
from broker.tenancy.grants import Grant
from broker.tenancy.tenants import ANONYMOUS, TenantConfig
from broker.upstream.deployments import ModelConfig
from schemas import ChatRequest, subjects

__all__ = ["DEFAULT_TENANT", "Prepared", "Reply", "error_reply"]

DEFAULT_TENANT = subjects.DEFAULT_TENANT


@dataclass(slots=True)
class Reply:
    """A whole reply: HTTP-like status, body, headers (provider, deployment ...).

    ``splits`` is set for an answer assembled from a stream: its chunk boundaries (see
    :class:`~broker.cache.response.CachedReply`), kept with its cache entry. ``upstream_s``
    is the time its call spent waiting for provider workers (every attempt), for an answer a
    provider gave.
    """

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    splits: list[list[int]] | None = None
    upstream_s: float = 0.0


@dataclass(slots=True)
class Prepared:
    """A decoded, validated request and what the broker decided about it.

    Attributes:
        key: cache key, or ``None`` when the request is not cached at all.
    """

    data: bytes
    request: ChatRequest
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
        """Whether the caller asked for a stream."""
        return bool(self.request.stream)

    @property
    def include_usage(self) -> bool:
        """Whether the caller asked for a final usage chunk."""
        options = self.request.stream_options
        return bool(options and options.include_usage)

    def estimate(self, completion_default: int = 0) -> tuple[int, int]:
        """(prompt, completion) tokens guessed before any call.

        The prompt at 4 bytes a token; the completion at the request's cap, else
        ``completion_default`` (rate limits count 0 and settle later; cost routing guesses).
        """
        request = self.request
        cap = request.max_completion_tokens or request.max_tokens or completion_default
        return len(self.data) // 4, cap

    @property
    def reads_cache(self) -> bool:
        """Whether a cached answer may serve this request."""
        return self.key is not None and not self.directives.no_cache


def error_reply(exc: BrokerError) -> Reply:
    """The reply for a broker error."""
    return Reply(exc.status, exc.envelope(), exc.extra_headers)
