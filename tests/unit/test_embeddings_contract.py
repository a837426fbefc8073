"""The embeddings wire contract: every input shape OpenAI takes, refusals naming the field,
and upstream answers checked to hold one vector per input."""

from __future__ import annotations

import msgspec
import pytest

from broker.errors import from_decode_error
from schemas.embeddings import (
    MAX_INPUTS,
    count_inputs,
    decode_embedding_list,
    decode_embeddings_request,
)


def body(**fields: object) -> bytes:
    return msgspec.json.encode({"model": "m", **fields})


@pytest.mark.parametrize(
    ("given", "inputs"),
    [
        ("one text", ["one text"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
        (["x"] * MAX_INPUTS, ["x"] * MAX_INPUTS),
    ],
    ids=["text", "texts", "token-array", "token-arrays", "2048-texts"],
)
def test_every_input_shape_becomes_a_list_of_inputs(given: object, inputs: list[object]) -> None:
    """A text, texts, a token array or token arrays: one input each, in order."""
    request, decoded, extras = decode_embeddings_request(body(input=given))
    assert decoded == inputs
    assert extras == {}
    assert request.format == "float"


def test_unknown_fields_are_kept_as_extras() -> None:
    """Provider fields the contract does not name (input_type ...) are passed on and keyed."""
    request, _, extras = decode_embeddings_request(
        body(input="x", input_type="query", encoding_format="base64", dimensions=256)
    )
    assert extras == {"input_type": "query"}
    assert (request.format, request.dimensions) == ("base64", 256)


@pytest.mark.parametrize(
    ("given", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["x"] * (MAX_INPUTS + 1)}, "input"),
        ({"input": ["a", ""]}, "input[1]"),
        ({"input": ["a", 1]}, "input[1]"),
        ({"input": [1, "a"]}, "input[1]"),
        ({"input": [1, [2]]}, "input[1]"),
        ({"input": [[1], "a"]}, "input[1]"),
        ({"input": [[1], []]}, "input[1]"),
        ({"input": [-1]}, "input[0]"),
        ({"input": [[2**31]]}, "input[0][0]"),
        ({"input": 3}, "input"),
        ({}, "input"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_refusals_name_the_field(given: dict[str, object], param: str) -> None:
    """Every refusal is a ValidationError whose path becomes the 400's ``param``."""
    with pytest.raises(msgspec.ValidationError) as caught:
        decode_embeddings_request(body(**given))
    assert from_decode_error(caught.value).param == param


@pytest.mark.parametrize(
    ("raw", "count"),
    [(b'"x"', 1), (b'["a","b"]', 2), (b"[1,2,3]", 1), (b"[[1],[2],[3]]", 3), (b"[]", 1)],
)
def test_count_inputs(raw: bytes, count: int) -> None:
    """How many vectors a body's raw input asks for."""
    assert count_inputs(raw) == count


def answer(*items: tuple[int, str]) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in items]
    return msgspec.json.encode({"object": "list", "data": data, "model": "m"})


def test_upstream_answers_keep_vectors_as_json() -> None:
    """Vectors stay the JSON the upstream wrote (floats or base64), never decoded."""
    decoded = decode_embedding_list(
        b'{"data":[{"index":1,"embedding":"AAAA"},{"index":0,"embedding":[0.5, 1e-3]}]}', 2
    )
    assert [bytes(d.embedding) for d in decoded.data] == [b'"AAAA"', b"[0.5, 1e-3]"]
    assert decoded.usage is None


@pytest.mark.parametrize(
    "bad",
    [
        b'{"data":[{"index":0,"embedding":3}]}',
        b'{"data":[{"index":0,"embedding":"AAAA"}]}',
        b'{"data":[{"index":0,"embedding":"A"},{"index":0,"embedding":"B"}]}',
        b'{"data":[]}',
        b'{"object":"chat.completion"}',
    ],
    ids=["number", "too-few", "same-index-twice", "empty", "not-a-list"],
)
def test_upstream_answers_must_hold_a_vector_per_input(bad: bytes) -> None:
    """An answer that is not one vector per input sent (indices 0..n-1) is refused."""
    with pytest.raises(msgspec.ValidationError):
        decode_embedding_list(bad, 2 if b'"A"' in bad or b"AAAA" in bad else 1)
