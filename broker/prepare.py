"""The preparer: a request's bytes and headers become a :class:`~broker.request.Prepared`
(decoded and validated once, the tenant authenticated, PII screened, the model resolved, the
cache key computed), or a :class:`~broker.errors.BrokerError`.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from broker.admission.classes import request_priority
from broker.cache.directives import CacheDirectives, parse_cache_control
from broker.cache.key import KeyBasis, body_key, cache_key
from broker.cache.settings import CacheSettings, NondeterministicPolicy
from broker.config import Config, ModelConfig
from broker.errors import (
    InvalidRequest,
    from_decode_error,
)
from broker.intake import allowed_model, caller_of
from broker.request import Prepared, Requested
from broker.tenancy.pii import PiiMode
from broker.tenancy.screen import screen
from broker.tenancy.tenants import Caller, KeyRing, TenantConfig
from schemas import (
    KNOWN_REQUEST_FIELDS,
    ChatRequest,
    decode_closed_chat_request,
    headers,
    request_extras,
)
from schemas.anthropic import KNOWN_MESSAGES_FIELDS, MessagesRequest, decode_messages_request
from schemas.api import Api
from schemas.codec import Closure
from schemas.names import NAME_RULE, is_name
from schemas.responses import ResponsesRequest, decode_responses_request

__all__ = ["MAX_TIMEOUT_S", "RequestPreparer", "request_timeout_s"]

#: Responses fields that cannot change the answer, besides chat's: a background response and
#: a foreground one share an entry.
_UNKEYED_RESPONSES = ("background",)
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

    def prepare(
        self,
        data: bytes,
        hdrs: dict[str, str],
        caller: Caller | None = None,
        api: Api = Api.CHAT,
    ) -> Prepared:
        """Everything the pipeline needs to know about a request, or a :class:`BrokerError`.

        ``caller`` is given when it is already known (a tenant-bound subject, a batch line,
        a token verified after a key refresh); otherwise the ``Authorization`` header decides.
        ``api`` is what the body speaks (the subject says).

        Raises:
            KeysNeeded: a JWT whose issuer key is not held yet (the pipeline fetches it and
                asks again).
        """
        caller = caller_of(data, hdrs, caller, self.keys, self.max_body)
        tenant = caller.tenant
        try:
            request, closure = _decode(data, api)
            self._config.limits.check(request)
            restore = None
            if tenant.pii is not PiiMode.OFF:
                screened = screen(data, tenant.pii, api)
                if screened is not None:  # the key and the providers read the redacted body
                    data, redacted = screened
                    request, closure = _decode(data, api)
                    if tenant.pii_restore:
                        restore = {placeholder: value for value, placeholder in redacted.items()}
        except msgspec.MsgspecError as exc:
            raise from_decode_error(exc) from None
        model = allowed_model(self._config, caller, request.model)
        directives = parse_cache_control(hdrs.get(headers.CACHE_CONTROL))
        priority = request_priority(hdrs.get(headers.PRIORITY), tenant, caller.grant)
        timeout = request_timeout_s(hdrs, model.timeout_s or self._config.broker.default_timeout_s)
        upstream = {name: hdrs[name] for name in headers.UPSTREAM_HEADERS if name in hdrs}
        key, basis = None, KeyBasis()
        if api is not Api.COUNT_TOKENS:  # token counts are never stored
            key, basis = self._key(
                data,
                request,
                model,
                hdrs,
                directives=directives,
                tenant=tenant,
                closure=closure,
                upstream=upstream,
            )
        return Prepared(
            data=data,
            request=request,
            model=model,
            request_id=hdrs.get(headers.REQUEST_ID) or self._new_id(),
            deadline=self._clock() + timeout,
            key=key,
            directives=directives,
            trace=hdrs.get(headers.TRACEPARENT),
            tenant=tenant,
            grant=caller.grant,
            restore=restore,
            idempotent=headers.REQUEST_ID in hdrs and hdrs.get(headers.IDEMPOTENT) == "1",
            priority=priority,
            api=api,
            basis=basis,
            upstream_headers=upstream,
        )

    def _key(
        self,
        data: bytes,
        request: Requested,
        model: ModelConfig,
        hdrs: dict[str, str],
        *,
        directives: CacheDirectives,
        tenant: TenantConfig,
        closure: Closure,
        upstream: dict[str, str],
    ) -> tuple[str | None, KeyBasis]:
        """The cache key (``None``: not cached) and what it was made of besides the request."""
        settings = self._cache
        if settings is None or (directives.no_cache and directives.no_store):
            return None, KeyBasis()
        if settings.nondeterministic is NondeterministicPolicy.BYPASS and _sampled(request):
            return None, KeyBasis()
        namespace = hdrs.get(headers.CACHE_NAMESPACE, "default")
        if not is_name(namespace):
            raise InvalidRequest(
                f"{headers.CACHE_NAMESPACE} must be {NAME_RULE}",
                param=headers.CACHE_NAMESPACE,
            )
        owner = "shared" if settings.shared_across_tenants else tenant.name
        where = f"{owner}:{namespace}"
        basis = _basis(data, request, closure, upstream)
        try:
            if isinstance(request, ResponsesRequest):
                key = body_key(data, model.name, where, salt=basis.salt, unkeyed=_UNKEYED_RESPONSES)
                return key, basis
            if basis.whole_body:
                return body_key(data, model.name, where, salt=basis.salt), basis
        except msgspec.MsgspecError as exc:
            raise from_decode_error(exc) from None
        return cache_key(request, basis.extras, model.name, where, salt=basis.salt), basis


def _basis(data: bytes, request: Requested, closure: Closure, upstream: dict[str, str]) -> KeyBasis:
    """What a key is made of besides the request: the fields its contract does not name (read
    only when the body has some and is not keyed whole), the API and the upstream headers.

    Raises:
        InvalidRequest: an extra field's value Python cannot hold, naming it.
    """
    if isinstance(request, ResponsesRequest):  # open by design: keyed over its whole body
        salt = Api.RESPONSES.value.encode()
        for name, value in upstream.items():
            salt += f"\x00{name}={value}".encode()
        return KeyBasis({}, salt, whole_body=True)
    messages = isinstance(request, MessagesRequest)
    extras = {}
    if closure is Closure.TOP_OPEN:
        known = KNOWN_MESSAGES_FIELDS if messages else KNOWN_REQUEST_FIELDS
        try:
            extras = request_extras(data, known)
        except msgspec.MsgspecError as exc:
            raise from_decode_error(exc) from None
    salt = Api.MESSAGES.value.encode() if messages else b""  # chat keys are as they were
    for name, value in upstream.items():
        salt += f"\x00{name}={value}".encode()
    return KeyBasis(extras, salt, whole_body=closure is Closure.OPEN)


def _decode(data: bytes, api: Api) -> tuple[Requested, Closure]:
    """The request decoded by its API's contract, and how much of the body it holds.

    Raises:
        msgspec.MsgspecError: not JSON, or breaks the contract.
    """
    if api is Api.CHAT:
        return decode_closed_chat_request(data)
    if api is Api.RESPONSES:
        return decode_responses_request(data), Closure.OPEN
    request, closed = decode_messages_request(data, count=api is Api.COUNT_TOKENS)
    return request, Closure.CLOSED if closed else Closure.TOP_OPEN


def request_timeout_s(hdrs: dict[str, str], default: float) -> float:
    """The request's time budget in seconds: ``Llm-Timeout-Ms`` (at most
    :data:`MAX_TIMEOUT_S`), else ``default``.

    Raises:
        InvalidRequest: the header is not a positive number.
    """
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


def _sampled(request: Requested) -> bool:
    """Whether the answer is a random sample (both APIs' default temperature is 1)."""
    temperature = 1.0 if request.temperature is None else request.temperature
    seed = request.seed if isinstance(request, ChatRequest) else None
    return temperature > 0 and seed is None
