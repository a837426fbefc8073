"""The mock provider's embeddings: deterministic unit vectors of the asked dimensions."""

from __future__ import annotations

import array
import base64
import math

import msgspec
import pytest

from workers import MockProvider
from workers.base import ProviderRequest
from workers.mock_vectors import mock_vector


def norm(values: list[float]) -> float:
    return math.sqrt(math.fsum(v * v for v in values))


@pytest.mark.parametrize("item", ["a text", "", "é ü 🙂", [1, 2, 3]])
def test_same_input_same_unit_vector(item: str | list[int]) -> None:
    """A vector is a function of its input alone, of unit length, in float32."""
    first, again = mock_vector(item, 256), mock_vector(item, 256)
    assert first == again
    assert first.typecode == "f"
    assert norm(first.tolist()) == pytest.approx(1.0, abs=1e-6)


def test_inputs_differ_and_fewer_dimensions_are_the_start_renormalised() -> None:
    """Different inputs get different vectors (a text is not its token ids); a shorter vector
    is the longer one's first components scaled back to unit length."""
    assert mock_vector("a", 64) != mock_vector("b", 64)
    assert mock_vector("[1]", 8) != mock_vector([1], 8)
    long, short = mock_vector("x", 1024).tolist(), mock_vector("x", 32).tolist()
    head = long[:32]
    assert short == pytest.approx([v / norm(head) for v in head], abs=1e-6)


async def test_the_mock_answers_floats_or_base64_of_its_configured_dimensions() -> None:
    """embed: one vector per input in order, the configured dimensions unless the request
    names some, base64 decoding to exactly the float answer, and a token count."""
    mock = MockProvider(embedding_dimensions=12)

    async def ask(**fields: object) -> dict[str, object]:
        body = msgspec.json.encode({"model": "x", "input": ["one", "two"], **fields})
        reply = await mock.embed(ProviderRequest(body, upstream_model="mock-embed"))
        decoded: dict[str, object] = msgspec.json.decode(reply)
        return decoded

    floats = await ask()
    encoded = await ask(encoding_format="base64")
    shorter = await ask(dimensions=4)
    data = floats["data"]
    assert isinstance(data, list)
    assert [d["index"] for d in data] == [0, 1]
    assert [len(d["embedding"]) for d in data] == [12, 12]
    assert data[0]["embedding"] == mock_vector("one", 12).tolist()
    assert floats["model"] == "mock-embed"
    assert floats["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    for plain, packed in zip(data, encoded["data"], strict=True):  # type: ignore[call-overload]
        assert (
            array.array("f", base64.b64decode(packed["embedding"])).tolist() == (plain["embedding"])
        )
    assert [len(d["embedding"]) for d in shorter["data"]] == [4, 4]  # type: ignore[index]
