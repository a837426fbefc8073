"""The embeddings preparer: a request's bytes and headers become an
:class:`~broker.embeddings.call.EmbeddingCall` (decoded and validated once, the caller
identified, PII screened, the model resolved and allowed to the caller, each input's cache key
computed), or a :class:`~broker.errors.BrokerError`: the same checks in the same order as a
chat request's (:mod:`broker.prepare`).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from broker.admission.classes import request_priority
from broker.cache.directives import parse_cache_control
from broker.cache.settings import CacheSettings
from broker.cache.vectors import vector_keys
from broker.config import Config, ModelConfig
from broker.embeddings.call import EmbeddingCall
from broker.errors import (
    InvalidRequest,
    PiiBlocked,
    from_decode_error,
)
from broker.intake import allowed_model, caller_of
from broker.prepare import request_timeout_s
from broker.tenancy.pii import PiiMode, Redactor, detect
from broker.tenancy.tenants import Caller, KeyRing, TenantConfig
from schemas import headers
from schemas.codec import decode_json
from schemas.embeddings import Input, decode_embeddings_request
from schemas.names import NAME_RULE, is_name

__all__ = ["EMBEDDING_KINDS", "EmbeddingPreparer"]

#: Provider kinds whose workers compute embeddings (``workers.base.Embedder``); a model none
#: of whose deployments is of one is refused with a 400 naming ``model``.
EMBEDDING_KINDS = frozenset({"openai", "azure", "openai_compatible", "mock"})

_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encoder = msgspec.json.Encoder()


class EmbeddingPreparer:
    """Decodes, validates, resolves the model and keys each input.

    Args:
        config: models, providers, limits.
        cache: cache settings, or ``None`` when caching is off.
        max_body: byte limit for a request body.
        clock: monotonic seconds (deadlines).
        new_id: request id factory for requests that carry none.
        keys: the API keys (the chat preparer's: one key ring per broker).
    """

    def __init__(
        self,
        config: Config,
        cache: CacheSettings | None,
        max_body: int,
        clock: Callable[[], float],
        new_id: Callable[[], str],
        *,
        keys: KeyRing,
    ) -> None:
        self._config = config
        self._cache = cache
        self.max_body = max_body
        self._clock = clock
        self.new_id = new_id
        self.keys = keys
        self._embeds = {name: self._computes_embeddings(m) for name, m in config.models.items()}

    def _computes_embeddings(self, model: ModelConfig) -> bool:
        models = [model, *(self._config.models[name] for name in model.fallbacks)]
        return any(
            self._config.providers[d.provider].kind in EMBEDDING_KINDS
            for m in models
            for d in m.deployments
        )

    def prepare(
        self, data: bytes, hdrs: dict[str, str], caller: Caller | None = None
    ) -> EmbeddingCall:
        """Everything the pipeline needs to know about a request, or a :class:`BrokerError`.

        ``caller`` is given when it is already known (a tenant-bound subject, a batch line,
        a token verified after a key refresh); otherwise the ``Authorization`` header decides
        (an API key or a JWT, as for chat).

        Raises:
            KeysNeeded: a JWT whose issuer key is not held yet (the pipeline fetches it and
                asks again).
        """
        caller = caller_of(data, hdrs, caller, self.keys, self.max_body)
        tenant = caller.tenant
        try:
            request, inputs, extras = decode_embeddings_request(data)
        except msgspec.MsgspecError as exc:
            raise from_decode_error(exc) from None
        if tenant.pii is not PiiMode.OFF:
            data, inputs = _screen_pii(data, inputs, tenant.pii)
        model = allowed_model(self._config, caller, request.model)
        if not self._embeds[model.name]:
            raise InvalidRequest(
                f"The model `{request.model}` has no deployment on a provider that computes "
                f"embeddings ({', '.join(sorted(EMBEDDING_KINDS))}).",
                param="model",
            )
        directives = parse_cache_control(hdrs.get(headers.CACHE_CONTROL))
        priority = request_priority(hdrs.get(headers.PRIORITY), tenant, caller.grant)
        timeout = request_timeout_s(hdrs, model.timeout_s or self._config.broker.default_timeout_s)
        cached = self._cache is not None and not (directives.no_cache and directives.no_store)
        return EmbeddingCall(
            data=data,
            request=request,
            inputs=inputs,
            keys=vector_keys(
                inputs,
                model=model.name,
                dimensions=request.dimensions,
                encoding_format=request.format,
                extras=extras,
                namespace=self._namespace(hdrs, tenant),
            ),
            model=model,
            request_id=hdrs.get(headers.REQUEST_ID) or self.new_id(),
            deadline=self._clock() + timeout,
            directives=directives,
            cached=cached,
            trace=hdrs.get(headers.TRACEPARENT),
            tenant=tenant,
            priority=priority,
            grant=caller.grant,
            idempotent=headers.REQUEST_ID in hdrs and hdrs.get(headers.IDEMPOTENT) == "1",
        )

    def _namespace(self, hdrs: dict[str, str], tenant: TenantConfig) -> str:
        """``<owner>:<namespace>``, as chat answers are keyed (purges find both)."""
        namespace = hdrs.get(headers.CACHE_NAMESPACE, "default")
        if not is_name(namespace):
            raise InvalidRequest(
                f"{headers.CACHE_NAMESPACE} must be {NAME_RULE}", param=headers.CACHE_NAMESPACE
            )
        shared = self._cache is not None and self._cache.shared_across_tenants
        return f"{'shared' if shared else tenant.name}:{namespace}"


def _screen_pii(data: bytes, inputs: list[Input], mode: PiiMode) -> tuple[bytes, list[Input]]:
    """Block, or redact the texts (before the keys: entries hold no PII). Token arrays are
    not screened: they cannot be read without the model's tokenizer.

    Returns:
        The body and the inputs, redacted.
    """
    if mode is PiiMode.BLOCK:
        for i, item in enumerate(inputs):
            found = detect(item) if isinstance(item, str) else []
            if found:
                kinds = ", ".join(sorted({f.kind for f in found}))
                raise PiiBlocked(
                    f"input[{i}] contains {kinds}; this key may not send personal data or secrets",
                    param=f"input[{i}]",
                )
        return data, inputs
    redactor = Redactor()
    screened: list[Input] = [
        redactor.redact(item) if isinstance(item, str) else item for item in inputs
    ]
    if screened == inputs:
        return data, inputs
    raw = decode_json(_fields_decoder, data)
    fields: dict[str, object] = {**raw}
    fields["input"] = screened
    return _encoder.encode(fields), screened
