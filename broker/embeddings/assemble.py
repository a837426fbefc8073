"""Vectors in, an answer out: the upstream's answer split into one entry per input, and the
caller's answer assembled from entries in the caller's order.

No vector is ever decoded: each stays the JSON the upstream wrote (an array of floats or a
base64 string) from the upstream's answer through the cache into every later answer.

Tokens: the upstream reports one ``prompt_tokens`` for the inputs it was sent; each input gets
a share in proportion to its estimated size (largest remainders, so the shares add up to the
upstream's figure exactly), kept with its vector. An answer's ``usage`` is the sum of its
inputs' shares, cached or not: the same figure whichever of its inputs the cache answered.
"""

from __future__ import annotations

import msgspec

from broker.cache.vectors import CachedVector
from broker.embeddings.call import EmbeddingCall, estimate_tokens
from broker.errors import BrokerError
from schemas import headers
from schemas.embeddings import EmbeddingUsage, decode_embedding_list

__all__ = ["InvalidAnswer", "answer_body", "fresh_vectors", "split_tokens"]


class InvalidAnswer(BrokerError):
    """The upstream's 200 is not one vector per input sent (a broken provider: another
    deployment may answer)."""

    status = 502
    code = "invalid_response"


def split_tokens(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders: the parts add up to
    ``total``; equal weights get parts at most one apart)."""
    if not weights:
        return []
    weight_sum = sum(weights)
    if weight_sum <= 0:
        weights, weight_sum = [1] * len(weights), len(weights)
    parts = [total * w // weight_sum for w in weights]
    left = total - sum(parts)
    by_remainder = sorted(
        range(len(weights)), key=lambda i: (-(total * weights[i] % weight_sum), i)
    )
    for i in by_remainder[:left]:
        parts[i] += 1
    return parts


def fresh_vectors(
    body: bytes, call: EmbeddingCall, reply_headers: dict[str, str]
) -> list[CachedVector]:
    """One entry per input of ``call`` from the upstream's answer to it, in input order.

    Raises:
        InvalidAnswer: the answer is not an embeddings list of exactly one vector per input
            (indices 0 to n - 1).
    """
    try:
        answer = decode_embedding_list(body)
    except msgspec.MsgspecError as exc:
        raise InvalidAnswer(f"the provider's answer is not an embeddings list: {exc}") from None
    count = len(call.inputs)
    ordered = sorted(answer.data, key=lambda item: item.index)
    if [item.index for item in ordered] != list(range(count)):
        raise InvalidAnswer(
            f"the provider answered {len(ordered)} embeddings for {count} inputs "
            "(or numbered them wrongly)"
        )
    total = answer.usage.prompt_tokens if answer.usage is not None else 0
    shares = split_tokens(total, [estimate_tokens(item) for item in call.inputs])
    model = answer.model or call.request.model
    provider = reply_headers.get(headers.PROVIDER, "")
    deployment = reply_headers.get(headers.DEPLOYMENT, "")
    return [
        CachedVector(bytes(item.embedding), share, model, provider, deployment)
        for item, share in zip(ordered, shares, strict=True)
    ]


class _Vector(msgspec.Struct):
    object: str
    index: int
    embedding: msgspec.Raw


class _Answer(msgspec.Struct):
    object: str
    data: list[_Vector]
    model: str
    usage: EmbeddingUsage


_encoder = msgspec.json.Encoder()


def answer_body(entries: list[CachedVector]) -> bytes:
    """OpenAI's embeddings list of ``entries`` (one per input, in input order), as JSON.

    Each vector is copied in as it is: 100 vectors of 1,536 dimensions took 0.09 ms in base64
    and 0.27 ms as floats (3.2 MB), keying the 100 inputs 0.16 ms.
    """
    tokens = sum(entry.tokens for entry in entries)
    return _encoder.encode(
        _Answer(
            "list",
            [
                _Vector("embedding", i, msgspec.Raw(entry.embedding))
                for i, entry in enumerate(entries)
            ],
            entries[0].model,
            EmbeddingUsage(tokens, tokens),
        )
    )
