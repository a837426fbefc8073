"""An embeddings request inside the broker: its inputs, their cache keys, and the call for the
inputs the cache lacks.

:class:`EmbeddingCall` is a :class:`~broker.request.Call`, so routing, forwarding, metering,
repeats and the request record treat it as they treat a chat request. The call that goes
upstream (:meth:`EmbeddingCall.for_inputs`) holds only the inputs the cache could not answer,
and is told from other calls by its own body: a retry under the same request id shares an
upstream call with its first attempt only when both send the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import msgspec
from blake3 import blake3

from broker.cache.directives import CacheDirectives
from broker.tenancy.grants import Grant
from broker.tenancy.tenants import ANONYMOUS, TenantConfig
from broker.upstream.deployments import ModelConfig
from schemas.api import Api
from schemas.codec import decode_json
from schemas.embeddings import EmbeddingsRequest, Input

__all__ = ["EmbeddingCall", "estimate_tokens"]

_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encoder = msgspec.json.Encoder()


def estimate_tokens(item: Input) -> int:
    """An input's tokens guessed before any call: four characters a token for a text (as for
    chat prompts), the length of a token array."""
    if isinstance(item, str):
        return max(1, (len(item) + 3) // 4)
    return len(item)


@dataclass(slots=True)
class EmbeddingCall:
    """A decoded, validated embeddings request and what the broker decided about it.

    Attributes:
        data: the body a provider worker receives (the caller's, PII screened).
        inputs: the texts or token arrays, in the caller's order.
        keys: each input's cache key (also what tells equal inputs apart).
        cached: whether the cache may serve or keep its vectors at all.
    """

    data: bytes
    request: EmbeddingsRequest
    inputs: list[Input]
    keys: list[str]
    model: ModelConfig
    request_id: str
    deadline: float
    directives: CacheDirectives
    cached: bool
    trace: str | None = None
    tenant: TenantConfig = ANONYMOUS
    grant: Grant | None = None  # the key's own model list and limits, under the tenant's
    owner: str = ""  # the caller's reply subject: only a cancel naming it stops the request
    idempotent: bool = False
    priority: int = 1  # its class while it waits for capacity (broker.admission.classes)
    queued_s: float = 0.0  # how long it waited for capacity so far
    #: The caller's headers for the upstream: none (they are the Anthropic API's).
    upstream_headers: dict[str, str] = field(default_factory=dict)
    _digest: bytes | None = field(default=None, repr=False)

    @property
    def api(self) -> Api:
        """What the body speaks (``Llm-Api: embeddings`` to the worker)."""
        return Api.EMBEDDINGS

    @property
    def stream(self) -> bool:
        """Embeddings are never streamed."""
        return False

    @property
    def reads_cache(self) -> bool:
        """Whether cached vectors may answer it."""
        return self.cached and not self.directives.no_cache

    @property
    def writes_cache(self) -> bool:
        """Whether its new vectors may be kept."""
        return self.cached and not self.directives.no_store

    def digest(self) -> bytes:
        """What tells this request from another: its inputs' keys (which cover the model and
        every parameter) in order, computed once."""
        if self._digest is None:
            self._digest = blake3("\n".join(self.keys).encode()).digest()
        return self._digest

    def estimate(self, completion_default: int = 0) -> tuple[int, int]:
        """(input tokens, 0) guessed before any call (embeddings complete nothing)."""
        return sum(estimate_tokens(item) for item in self.inputs), 0

    def for_inputs(self, positions: list[int]) -> EmbeddingCall:
        """The call for the inputs at ``positions`` only (the caller's body unchanged when it
        is all of them in order), told from other calls by its own body."""
        if positions == list(range(len(self.inputs))):
            body = self.data
        else:
            raw = decode_json(_fields_decoder, self.data)
            fields: dict[str, object] = {**raw}
            fields["input"] = [self.inputs[i] for i in positions]
            body = _encoder.encode(fields)
        return replace(
            self,
            data=body,
            inputs=[self.inputs[i] for i in positions],
            keys=[self.keys[i] for i in positions],
            _digest=blake3(body).digest(),
        )
