"""OpenAI embeddings wire contract: ``POST /v1/embeddings``, the payload of ``llm.embeddings``.

``input`` is one text, a list of texts, one token array or a list of token arrays, as OpenAI
takes it. :func:`decode_embeddings_request` decodes and validates a body once and returns its
inputs as a list (a text, or a token array each), whatever shape they came in, so that every
later step (cache keys, the upstream call, the answer) works per input. A body that breaks the
contract raises ``msgspec.ValidationError`` whose message ends with the path of the field at
fault (`` - at `$.input[3]```), as msgspec's own do.

The answer's embeddings are kept as the upstream wrote them (:class:`RawEmbeddingList`: each
vector's JSON, an array of floats or a base64 string, is never decoded), so an answer is
assembled from cached and fresh vectors without converting a number.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from schemas.codec import decode_json

__all__ = [
    "MAX_DIMENSIONS",
    "MAX_INPUTS",
    "MAX_TOKEN_ID",
    "Embedding",
    "EmbeddingList",
    "EmbeddingUsage",
    "EmbeddingsRequest",
    "Input",
    "RawEmbedding",
    "RawEmbeddingList",
    "count_inputs",
    "decode_embedding_list",
    "decode_embeddings_request",
]

#: OpenAI's bound on the inputs of one request.
MAX_INPUTS = 2048
#: Bound on ``dimensions``: twice the largest embedding models' (4096); a larger value is a
#: mistake, and the mock would build vectors of it.
MAX_DIMENSIONS = 8192
#: Bound on a token id (tokenizers' vocabularies are a few hundred thousand ids).
MAX_TOKEN_ID = 2**31 - 1

TokenId = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKEN_ID)]
#: One input as the broker handles it: a text, or a token array.
Input = str | list[int]

#: ``input`` in the JSON schema: the decoder reads a loose union (a list may mix the shapes);
#: :func:`decode_embeddings_request` refuses what OpenAI does.
_INPUT_DESCRIPTION = (
    "a non-empty text, or 1 to 2048 of: texts (all non-empty), token ids (one token array), "
    "or token arrays (all non-empty); never a mix"
)


class EmbeddingsRequest(msgspec.Struct, omit_defaults=True):
    """``POST /v1/embeddings`` body, the payload of ``llm.embeddings``."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    input: Annotated[
        str | list[str | TokenId | list[TokenId]],
        msgspec.Meta(description=_INPUT_DESCRIPTION),
    ]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, msgspec.Meta(ge=1, le=MAX_DIMENSIONS)] | None = None
    user: str | None = None

    @property
    def format(self) -> str:
        """``float`` (OpenAI's default) or ``base64``."""
        return self.encoding_format or "float"


class EmbeddingUsage(msgspec.Struct):
    """Tokens of the inputs (embeddings have no completion)."""

    prompt_tokens: int = 0
    total_tokens: int = 0


class Embedding(msgspec.Struct):
    """One vector: floats, or (``encoding_format: base64``) its little-endian float32 bytes
    in base64."""

    index: int
    embedding: list[float] | str
    object: Literal["embedding"] = "embedding"


class EmbeddingList(msgspec.Struct):
    """The answer of ``llm.embeddings``: one embedding per input, in input order."""

    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
    object: Literal["list"] = "list"


class RawEmbedding(msgspec.Struct):
    """An :class:`Embedding` with its vector left as the JSON it arrived in."""

    index: int
    embedding: msgspec.Raw


class RawEmbeddingList(msgspec.Struct):
    """An :class:`EmbeddingList` whose vectors are left as JSON (usage may be absent)."""

    data: list[RawEmbedding]
    model: str = ""
    usage: EmbeddingUsage | None = None


class _Closed(EmbeddingsRequest, forbid_unknown_fields=True):
    """A request with no top-level field the contract does not name (the common case)."""


_closed_decoder = msgspec.json.Decoder(_Closed)
_open_decoder = msgspec.json.Decoder(EmbeddingsRequest)
_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_any_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_list_decoder = msgspec.json.Decoder(RawEmbeddingList)
_KNOWN = frozenset(EmbeddingsRequest.__struct_fields__)


def _invalid(message: str, path: str) -> msgspec.ValidationError:
    return msgspec.ValidationError(f"{message} - at `$.{path}`")


def _inputs(raw: str | list[str | int | list[int]]) -> list[Input]:
    """The request's inputs as a list; raises ``ValidationError`` naming the one at fault."""
    if isinstance(raw, str):
        if not raw:
            raise _invalid("input must not be an empty string", "input")
        return [raw]
    if not raw:
        raise _invalid("input must not be an empty array", "input")
    if len(raw) > MAX_INPUTS:
        raise _invalid(f"input has {len(raw)} items; at most {MAX_INPUTS} are allowed", "input")
    first = raw[0]
    if isinstance(first, int):  # one token array
        for i, token in enumerate(raw):
            if not isinstance(token, int):
                raise _invalid("a token array holds token ids (integers) only", f"input[{i}]")
        return [raw]  # type: ignore[list-item]  # (every item checked to be an int)
    kind = type(first)
    for i, item in enumerate(raw):
        if type(item) is not kind:
            raise _invalid(
                "input must be all texts, all token ids or all token arrays", f"input[{i}]"
            )
        if not item:
            what = "an empty string" if kind is str else "an empty token array"
            raise _invalid(f"input[{i}] must not be {what}", f"input[{i}]")
    return list(raw)  # type: ignore[arg-type]  # (all str, or all list[int])


def decode_embeddings_request(body: bytes) -> tuple[EmbeddingsRequest, list[Input], dict[str, Any]]:
    """Decode and validate an embeddings body.

    Returns:
        The request, its inputs as a list (a text or a token array each), and its top-level
        fields the contract does not name (provider passthrough fields such as ``input_type``),
        decoded: they go upstream and into the cache key.

    Raises:
        msgspec.DecodeError: the body is not JSON (or is nested too deeply).
        msgspec.ValidationError: the JSON breaks the contract (the message names the path).
    """
    try:
        request: EmbeddingsRequest = decode_json(_closed_decoder, body)
        extras: dict[str, Any] = {}
    except msgspec.ValidationError:  # an unknown field, or invalid: the open decoder says
        request = decode_json(_open_decoder, body)
        extras = _extras(body)
    return request, _inputs(request.input), extras


def _extras(body: bytes) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    for name, raw in decode_json(_fields_decoder, body).items():
        if name in _KNOWN:
            continue
        try:
            extras[name] = decode_json(_any_decoder, raw)
        except msgspec.ValidationError as exc:
            raise msgspec.ValidationError(f"{exc} - at `$.{name}`") from None
    return extras


_input_decoder = msgspec.json.Decoder(str | list[msgspec.Raw])
_NESTED = (b'"', b"[")


def count_inputs(raw: bytes | msgspec.Raw | None) -> int:
    """How many inputs a body's raw ``input`` holds (a text, or one token array: one).

    Raises:
        msgspec.ValidationError: ``input`` is absent or neither a string nor an array.
    """
    if raw is None:
        raise msgspec.ValidationError("Object missing required field `input`")
    value = decode_json(_input_decoder, raw)
    if isinstance(value, str) or not value:
        return 1
    return len(value) if bytes(memoryview(value[0])[:1]) in _NESTED else 1


def decode_embedding_list(body: bytes, inputs: int | None = None) -> RawEmbeddingList:
    """Decode an upstream's embeddings answer, its vectors left as JSON.

    Args:
        body: the answer.
        inputs: how many inputs were sent: the answer must hold a vector for each, numbered
            0 to ``inputs - 1`` (unchecked when ``None``).

    Raises:
        msgspec.DecodeError, msgspec.ValidationError: not an embeddings list, a vector that is
            neither a JSON array nor a string, or not one vector per input.
    """
    answer = decode_json(_list_decoder, body)
    for item in answer.data:
        if bytes(memoryview(item.embedding)[:1]) not in _NESTED:
            raise msgspec.ValidationError(
                f"embedding {item.index} is neither an array of floats nor a base64 string"
            )
    if inputs is not None and sorted(item.index for item in answer.data) != list(range(inputs)):
        raise msgspec.ValidationError(
            f"{len(answer.data)} embeddings (or wrongly numbered ones) for {inputs} inputs"
        )
    return answer
