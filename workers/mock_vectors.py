"""The mock provider's embeddings: a deterministic unit vector per input.

The same input always gets the same vector, on every worker and every run: its components are
SHAKE-256 of the input, read as 32-bit integers and scaled to [-1, 1), then normalised to unit
length and rounded to float32 (what real embeddings are). SHAKE's output for ``d`` components
is the start of its output for more, so asking for fewer ``dimensions`` gives the longer
vector's first components, renormalised: what OpenAI's ``text-embedding-3`` models do.

Token counts are a stable estimate: four characters a token for a text, the array's length
for a token array. A 1,536-dimension vector takes about 0.19 ms of CPU in pure Python (2,048
inputs: 0.4 s), which is fast enough for a mock that never leaves the process.
"""

from __future__ import annotations

import array
import base64
import hashlib
import math
import struct
import sys

import msgspec

from schemas.embeddings import Input
from workers.config import DEFAULT_EMBEDDING_DIMENSIONS

__all__ = ["embedding_answer", "mock_vector", "tokens_of"]

_SCALE = 1 / 2**31
_encoder = msgspec.json.Encoder()


def _seed(item: Input) -> bytes:
    if isinstance(item, str):
        return b"s" + item.encode("utf-8", "surrogatepass")
    return b"t" + _encoder.encode(item)


def mock_vector(item: Input, dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS) -> array.array[float]:
    """The input's unit vector of ``dimensions`` float32 components."""
    raw = hashlib.shake_256(_seed(item)).digest(4 * dimensions)
    values = [u * _SCALE - 1.0 for u in struct.unpack(f"<{dimensions}I", raw)]
    norm = math.hypot(*values) or 1.0
    return array.array("f", [v / norm for v in values])


def tokens_of(item: Input) -> int:
    """The input's token count, estimated."""
    if isinstance(item, str):
        return max(1, (len(item) + 3) // 4)
    return len(item)


def _encoded(vector: array.array[float], encoding_format: str) -> object:
    """Floats, or the little-endian float32 bytes in base64 (OpenAI's ``base64``)."""
    if encoding_format != "base64":
        return vector.tolist()
    if sys.byteorder != "little":
        vector = array.array("f", vector)
        vector.byteswap()
    return base64.b64encode(vector.tobytes()).decode("ascii")


def embedding_answer(
    inputs: list[Input], model: str, *, dimensions: int, encoding_format: str
) -> bytes:
    """OpenAI's embeddings list for ``inputs``, as JSON bytes."""
    tokens = sum(tokens_of(item) for item in inputs)
    return _encoder.encode(
        {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": _encoded(mock_vector(item, dimensions), encoding_format),
                }
                for i, item in enumerate(inputs)
            ],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
