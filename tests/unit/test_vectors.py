"""Per-input vector cache keys, token shares, and answers assembled from cached vectors."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from broker.cache.directives import NO_DIRECTIVES
from broker.cache.vectors import CachedVector, vector_keys
from broker.embeddings.assemble import InvalidAnswer, answer_body, fresh_vectors, split_tokens
from broker.embeddings.call import EmbeddingCall
from broker.upstream.deployments import Deployment, ModelConfig
from schemas import headers
from schemas.embeddings import Input, decode_embeddings_request

BASE: dict[str, Any] = {
    "model": "m",
    "dimensions": None,
    "encoding_format": "float",
    "extras": {},
    "namespace": "acme:default",
}


def key(item: Input, **changed: Any) -> str:
    return vector_keys([item], **{**BASE, **changed})[0]


def test_a_key_per_input_that_only_its_input_and_parameters_change() -> None:
    """Equal inputs share a key; model, dimensions, format, extras, namespace and the input
    (a text is never a token array) each change it; keys keep the cache's namespace form."""
    keys = vector_keys(["a", "b", "a"], **BASE)
    assert keys[0] == keys[2] != keys[1]
    assert keys[0].startswith("acme:default:")
    variants = {
        key("a"),
        key("a", model="other"),
        key("a", dimensions=256),
        key("a", encoding_format="base64"),
        key("a", extras={"input_type": "query"}),
        key("a", namespace="acme:other"),
        key("[1, 2]"),
        key([1, 2]),
        key([1, 2, 0]),
    }
    assert len(variants) == 9
    assert key("a", extras={"x": 1, "y": 2}) == key("a", extras={"y": 2, "x": 1})


@pytest.mark.parametrize(
    ("total", "weights"),
    [(10, [1, 1, 1]), (7, [5, 1]), (0, [3, 4]), (100, [1] * 7), (5, [0, 0]), (3, [10, 1, 1])],
)
def test_token_shares_add_up_to_the_upstreams_figure(total: int, weights: list[int]) -> None:
    """Each input's share is proportional to its size and the shares sum to the total."""
    shares = split_tokens(total, weights)
    assert sum(shares) == total
    assert all(share >= 0 for share in shares)
    if len(set(weights)) == 1:
        assert max(shares) - min(shares) <= 1


def call(inputs: list[Any]) -> EmbeddingCall:
    data = msgspec.json.encode({"model": "m", "input": inputs, "user": "u"})
    request, decoded, _ = decode_embeddings_request(data)
    model = ModelConfig(name="m", deployments=(Deployment(name="d", provider="p", model="m"),))
    return EmbeddingCall(
        data=data,
        request=request,
        inputs=decoded,
        keys=vector_keys(decoded, **BASE),
        model=model,
        request_id="r",
        deadline=0.0,
        directives=NO_DIRECTIVES,
        cached=True,
    )


def test_the_upstream_call_holds_only_the_inputs_asked_for() -> None:
    """All the inputs in order: the caller's body as it is; some: the same body with those
    inputs only; each call is told apart by its own body."""
    whole = call(["a", "b", "c"])
    assert whole.for_inputs([0, 1, 2]).data == whole.data
    some = whole.for_inputs([2, 0])
    assert msgspec.json.decode(some.data) == {"model": "m", "input": ["c", "a"], "user": "u"}
    assert some.keys == [whole.keys[2], whole.keys[0]]
    assert some.digest() != whole.for_inputs([0, 2]).digest()
    assert whole.estimate() == (3, 0)


def test_fresh_vectors_and_the_assembled_answer() -> None:
    """The upstream's vectors become one entry per input with its token share, and an answer
    assembled from entries is OpenAI's list in the caller's order, usage summed."""
    asked = call(["short", "a much longer input text"])
    upstream = msgspec.json.encode(
        {
            "data": [
                {"object": "embedding", "index": 1, "embedding": "QUFB"},
                {"object": "embedding", "index": 0, "embedding": [0.25, -0.5]},
            ],
            "model": "m-2",
            "usage": {"prompt_tokens": 9, "total_tokens": 9},
        }
    )
    entries = fresh_vectors(upstream, asked, {headers.PROVIDER: "p", headers.DEPLOYMENT: "d"})
    assert [e.embedding for e in entries] == [b"[0.25,-0.5]", b'"QUFB"']
    assert [e.tokens for e in entries] == [2, 7]
    assert {(e.model, e.provider, e.deployment) for e in entries} == {("m-2", "p", "d")}
    cached = CachedVector(b"[1.0,0.0]", 4, "m-2", "p", "d")
    body = msgspec.json.decode(answer_body([entries[1], cached, entries[0]]))
    assert body == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": "QUFB"},
            {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]},
            {"object": "embedding", "index": 2, "embedding": [0.25, -0.5]},
        ],
        "model": "m-2",
        "usage": {"prompt_tokens": 13, "total_tokens": 13},
    }


def test_an_answer_without_a_vector_per_input_is_refused() -> None:
    """Fewer vectors than inputs is a 502 invalid_response, not a shorter answer."""
    short = msgspec.json.encode({"data": [{"index": 0, "embedding": [1.0]}], "model": "m"})
    with pytest.raises(InvalidAnswer) as caught:
        fresh_vectors(short, call(["a", "b"]), {})
    assert (caught.value.status, caught.value.code) == (502, "invalid_response")
