"""The preparer: a request's bytes and headers become a :class:`~broker.request.Prepared`
(decoded and validated once, the tenant authenticated, PII screened, the model resolved, the
cache key computed), or a :class:`~broker.errors.BrokerError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from broker.cache.directives import CacheDirectives, parse_cache_control
from broker.cache.key import cache_key
from broker.cache.settings import CacheSettings, NondeterministicPolicy
from broker.config import Config, ModelConfig
from broker.errors import (
    HeaderTooLarge,
    InvalidRequest,
    ModelNotFound,
    PiiBlocked,
    RequestTooLarge,
    from_decode_error,
)
from broker.request import Prepared
from broker.tenancy.grants import EVERY_MODEL
from broker.tenancy.pii import PiiMode, Redactor, detect
from broker.tenancy.tenants import Caller, KeyRing, TenantConfig
from schemas import (
    ChatRequest,
    decode_chat_request,
    decode_closed_chat_request,
    headers,
    request_extras,
)
from schemas.codec import decode_json
from schemas.names import NAME_RULE, is_name

__all__ = ["MAX_TIMEOUT_S", "RequestPreparer"]

#: Upper bound on a caller-chosen time budget.
MAX_TIMEOUT_S = 3600.0


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

    def prepare(self, data: bytes, hdrs: dict[str, str], caller: Caller | None = None) -> Prepared:
        """Everything the pipeline needs to know about a request, or a :class:`BrokerError`.

        ``caller`` is given when it is already known (a tenant-bound subject, a batch line,
        a token verified after a key refresh); otherwise the ``Authorization`` header decides.

        Raises:
            KeysNeeded: a JWT whose issuer key is not held yet (the pipeline fetches it and
                asks again).
        """
        too_long = headers.oversized(hdrs)
        if too_long is not None:
            raise HeaderTooLarge(
                f"{too_long} is over {headers.MAX_VALUE_BYTES[too_long]} bytes", param=too_long
            )
        if caller is None:
            caller = self.keys.identify(hdrs.get(headers.AUTHORIZATION))
        tenant = caller.tenant
        if len(data) > self.max_body:
            raise RequestTooLarge(
                f"request body is {len(data)} bytes; the limit is {self.max_body}"
            )
        try:
            request, closed = decode_closed_chat_request(data)
            self._config.limits.check(request)
            restore = None
            if tenant.pii is not PiiMode.OFF:
                data, request, redacted = _screen_pii(data, tenant.pii)
                closed = False  # (its extras are read from the screened body)
                if redacted and tenant.pii_restore:
                    restore = {placeholder: value for value, placeholder in redacted.items()}
        except msgspec.MsgspecError as exc:
            raise from_decode_error(exc) from None
        model = self._config.resolve(request.model)
        if caller.grant is not None or tenant.models is not EVERY_MODEL:
            names = (model.name, *model.aliases) if model is not None else (request.model,)
            caller.check_model(request.model, names)
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
            key=self._key(
                data, request, model, hdrs, directives=directives, tenant=tenant, closed=closed
            ),
            directives=directives,
            trace=hdrs.get(headers.TRACEPARENT),
            tenant=tenant,
            grant=caller.grant,
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
        closed: bool = False,
    ) -> str | None:
        """The cache key (``None``: not cached); ``closed``: the body has no field the
        contract does not name, so no extras to read."""
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
            extras = {} if closed else request_extras(data)
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
