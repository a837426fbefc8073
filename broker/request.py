"""A request inside the broker: decoding and validation (done once), and the reply record."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from broker.cache.key import cache_key
from broker.cache.response import (
    CacheDirectives,
    CachedReply,
    CacheSettings,
    NondeterministicPolicy,
    parse_cache_control,
)
from broker.config import Config, ModelConfig
from broker.errors import (
    BrokerError,
    HeaderTooLarge,
    InvalidRequest,
    ModelNotFound,
    PiiBlocked,
    RequestTooLarge,
    from_decode_error,
)
from broker.tenancy.pii import PiiMode, Redactor, detect
from broker.tenancy.tenants import ANONYMOUS, KeyRing, TenantConfig
from schemas import ChatRequest, decode_chat_request, headers, request_extras, subjects
from schemas.codec import decode_json
from schemas.names import NAME_RULE, is_name

__all__ = [
    "DEFAULT_TENANT",
    "MAX_TIMEOUT_S",
    "Prepared",
    "Reply",
    "RequestPreparer",
    "error_reply",
    "hit_reply",
]

DEFAULT_TENANT = subjects.DEFAULT_TENANT
#: Upper bound on a caller-chosen time budget.
MAX_TIMEOUT_S = 3600.0


@dataclass(slots=True)
class Reply:
    """A whole reply: HTTP-like status, body, headers (provider, deployment ...).

    ``splits`` is set for an answer assembled from a stream: its chunk boundaries (see
    :class:`~broker.cache.response.CachedReply`), kept with its cache entry.
    """

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    splits: list[list[int]] | None = None


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
    token_estimate: int = 0  # counted against the tenant's tpm before the call
    upstream_s: float = 0.0  # time spent waiting for provider workers (all attempts)
    restore: dict[str, str] | None = None  # placeholder -> value, for tenants with pii_restore
    owner: str = ""  # the caller's reply subject: only a cancel naming it stops the request
    idempotent: bool = False  # its caller retries it under this request id (workers.once)

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


def hit_reply(hit: CachedReply) -> Reply:
    """The reply for a cache hit."""
    return Reply(
        200, hit.body, {headers.PROVIDER: hit.provider, headers.DEPLOYMENT: hit.deployment}
    )


class RequestPreparer:
    """Decodes, validates, resolves the model and computes the cache key.

    Args:
        config: models and limits.
        cache: cache settings, or ``None`` when caching is off.
        max_body: byte limit for a request body.
        clock: monotonic seconds (deadlines).
        new_id: request id factory for requests that carry none.
    """

    def __init__(
        self,
        config: Config,
        cache: CacheSettings | None,
        max_body: int,
        clock: Callable[[], float],
        new_id: Callable[[], str],
        *,
        keys: KeyRing | None = None,
    ) -> None:
        self._config = config
        self.keys = keys or KeyRing(config.tenants, required=config.auth_required)
        self._cache = cache
        self.max_body = max_body
        self._clock = clock
        self._new_id = new_id

    def prepare(
        self, data: bytes, hdrs: dict[str, str], tenant: TenantConfig | None = None
    ) -> Prepared:
        """Everything the pipeline needs to know about a request, or a :class:`BrokerError`.

        ``tenant`` is given when the NATS subject already named it (a tenant-bound subject);
        otherwise the API key decides.
        """
        too_long = headers.oversized(hdrs)
        if too_long is not None:
            raise HeaderTooLarge(
                f"{too_long} is over {headers.MAX_VALUE_BYTES[too_long]} bytes", param=too_long
            )
        if tenant is None:
            tenant = self.keys.authenticate(hdrs.get(headers.AUTHORIZATION))
        if len(data) > self.max_body:
            raise RequestTooLarge(
                f"request body is {len(data)} bytes; the limit is {self.max_body}"
            )
        try:
            request = decode_chat_request(data)
            self._config.limits.check(request)
            restore = None
            if tenant.pii is not PiiMode.OFF:
                data, request, redacted = _screen_pii(data, tenant.pii)
                if redacted and tenant.pii_restore:
                    restore = {placeholder: value for value, placeholder in redacted.items()}
        except msgspec.MsgspecError as exc:
            raise from_decode_error(exc) from None
        model = self._config.resolve(request.model)
        if model is None:
            raise ModelNotFound(
                f"The model `{request.model}` does not exist or is not configured.", param="model"
            )
        directives = parse_cache_control(hdrs.get(headers.CACHE_CONTROL))
        timeout = _timeout_s(hdrs, model.timeout_s or self._config.broker.default_timeout_s)
        return Prepared(
            data=data,
            request=request,
            model=model,
            request_id=hdrs.get(headers.REQUEST_ID) or self._new_id(),
            deadline=self._clock() + timeout,
            key=self._key(data, request, model, hdrs, directives=directives, tenant=tenant),
            directives=directives,
            trace=hdrs.get(headers.TRACEPARENT),
            tenant=tenant,
            restore=restore,
            idempotent=headers.REQUEST_ID in hdrs and hdrs.get(headers.IDEMPOTENT) == "1",
        )

    def _key(
        self,
        data: bytes,
        request: ChatRequest,
        model: ModelConfig,
        hdrs: dict[str, str],
        *,
        directives: CacheDirectives,
        tenant: TenantConfig,
    ) -> str | None:
        settings = self._cache
        if settings is None or (directives.no_cache and directives.no_store):
            return None
        if settings.nondeterministic is NondeterministicPolicy.BYPASS and _sampled(request):
            return None
        namespace = hdrs.get(headers.CACHE_NAMESPACE, "default")
        if not is_name(namespace):
            raise InvalidRequest(
                f"{headers.CACHE_NAMESPACE} must be {NAME_RULE}",
                param=headers.CACHE_NAMESPACE,
            )
        owner = "shared" if settings.shared_across_tenants else tenant.name
        try:
            extras = request_extras(data)
        except msgspec.MsgspecError as exc:
            raise from_decode_error(exc) from None
        return cache_key(request, extras, model.name, f"{owner}:{namespace}")


def _timeout_s(hdrs: dict[str, str], default: float) -> float:
    raw = hdrs.get(headers.TIMEOUT_MS)
    if raw is None:
        return default
    try:
        value = float(raw) / 1000
    except ValueError:
        raise InvalidRequest(
            f"{headers.TIMEOUT_MS} must be a number of milliseconds", param=headers.TIMEOUT_MS
        ) from None
    if not value > 0:  # also refuses NaN, which every comparison calls False
        raise InvalidRequest(f"{headers.TIMEOUT_MS} must be positive", param=headers.TIMEOUT_MS)
    return min(value, MAX_TIMEOUT_S)


def _sampled(request: ChatRequest) -> bool:
    """Whether the answer is a random sample (OpenAI's default temperature is 1)."""
    temperature = 1.0 if request.temperature is None else request.temperature
    return temperature > 0 and request.seed is None


_generic = msgspec.json.Decoder(dict[str, Any])
_generic_encoder = msgspec.json.Encoder()


def _screen_pii(data: bytes, mode: PiiMode) -> tuple[bytes, ChatRequest, dict[str, str]]:
    """Block, or redact the message texts (before the cache key: entries hold no PII).

    Returns the body, the request, and the redacted values (value -> placeholder).
    """
    body = decode_json(_generic, data)
    redactor = Redactor()
    changed = False
    for i, message in enumerate(body.get("messages") or []):
        content = message.get("content")
        texts = (
            [(message, "content")]
            if isinstance(content, str)
            else [(part, "text") for part in content or () if isinstance(part.get("text"), str)]
        )
        for holder, field_name in texts:
            text = holder[field_name]
            if mode is PiiMode.BLOCK:
                found = detect(text)
                if found:
                    kinds = ", ".join(sorted({f.kind for f in found}))
                    raise PiiBlocked(
                        f"messages[{i}] contains {kinds}; this key may not send "
                        "personal data or secrets",
                        param=f"messages[{i}].content",
                    )
                continue
            redacted = redactor.redact(text)
            if redacted != text:
                holder[field_name] = redacted
                changed = True
    if not changed:
        return data, decode_chat_request(data), {}
    data = _generic_encoder.encode(body)
    return data, decode_chat_request(data), redactor.placeholders
