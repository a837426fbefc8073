"""OpenAI chat-completions wire contract: request, response, streamed chunk.

Fields follow the OpenAI reference. Content parts, tool schemas and other open-ended objects
stay plain JSON objects so nothing a provider understands is dropped; unknown top-level request
fields are captured separately by :func:`schemas.codec.decode_chat_request`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "MAX_OUTPUT_TOKENS",
    "MAX_STOP_SEQUENCES",
    "UNKEYED_REQUEST_FIELDS",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatRequest",
    "Choice",
    "ChunkChoice",
    "Delta",
    "FunctionCall",
    "Message",
    "Model",
    "ModelList",
    "ResponseMessage",
    "StreamEnd",
    "StreamOptions",
    "Tool",
    "ToolCall",
    "ToolFunction",
    "Usage",
]

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
JSONObject = dict[str, Any]


class FunctionCall(msgspec.Struct, omit_defaults=True):
    """``{"name", "arguments"}`` of an assistant tool call; ``arguments`` is a JSON string."""

    name: str
    arguments: str = ""


class ToolCall(msgspec.Struct, omit_defaults=True):
    """An assistant's request to call a tool."""

    id: str
    function: FunctionCall
    type: str = "function"


class Message(msgspec.Struct, omit_defaults=True):
    """One chat message; ``content`` is a string or a list of typed parts.

    ``refusal``, ``audio``, ``function_call`` and ``annotations`` are what an assistant
    message of OpenAI's own answers carries when a caller sends it back in the history.
    """

    role: Role
    content: str | list[JSONObject] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    audio: JSONObject | None = None
    function_call: JSONObject | None = None
    annotations: list[JSONObject] | None = None


class ToolFunction(msgspec.Struct, omit_defaults=True):
    """A callable function offered to the model."""

    name: str
    description: str | None = None
    parameters: JSONObject | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, omit_defaults=True):
    """``{"type": "function", "function": {...}}``, or another kind of tool
    (``{"type": "custom", "custom": {...}}``)."""

    function: ToolFunction | None = None
    type: str = "function"
    custom: JSONObject | None = None


class StreamOptions(msgspec.Struct, omit_defaults=True):
    """Streaming options; ``include_usage`` adds a final usage chunk."""

    include_usage: bool | None = None


Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
TopP = Annotated[float, msgspec.Meta(ge=0, le=1)]
Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]
#: Upper bound on ``max_tokens`` / ``max_completion_tokens``: no model writes more than a few
#: hundred thousand tokens in one answer; a larger value is a mistake (or a probe) and would
#: only inflate the tenant's token accounting before the upstream refused it.
MAX_OUTPUT_TOKENS = 1_000_000
#: OpenAI accepts at most four stop sequences.
MAX_STOP_SEQUENCES = 4
MaxTokens = Annotated[int, msgspec.Meta(ge=1, le=MAX_OUTPUT_TOKENS)]
StopList = Annotated[list[str], msgspec.Meta(max_length=MAX_STOP_SEQUENCES)]


class ChatRequest(msgspec.Struct, omit_defaults=True):
    """``POST /v1/chat/completions`` body, the payload of ``llm.chat``."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    tools: list[Tool] | None = None
    tool_choice: str | JSONObject | None = None
    parallel_tool_calls: bool | None = None
    response_format: JSONObject | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    stop: str | StopList | None = None
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: int | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    modalities: list[str] | None = None
    audio: JSONObject | None = None
    prediction: JSONObject | None = None
    web_search_options: JSONObject | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None


#: Request fields that cannot change the answer (who asks, what is stored, how it is
#: delivered and billed): left out of the cache key, so they never split an entry.
UNKEYED_REQUEST_FIELDS = (
    "user",
    "metadata",
    "stream",
    "stream_options",
    "store",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
)


class Usage(msgspec.Struct, omit_defaults=True):
    """Token counts of one completion (with OpenAI's breakdowns when the upstream gives
    them: cached prompt tokens, reasoning tokens ...; cache writes as
    ``prompt_tokens_details.cache_write_tokens``, see :mod:`schemas.usage`)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: JSONObject | None = None
    completion_tokens_details: JSONObject | None = None


class ResponseMessage(msgspec.Struct, omit_defaults=True):
    """The assistant message inside a choice.

    ``reasoning_content`` (and ``reasoning``) is the thinking some OpenAI-compatible servers
    (vLLM, DeepSeek, Ollama ...) return beside the answer.
    """

    role: str
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class Choice(msgspec.Struct):
    """One completion choice."""

    index: int
    message: ResponseMessage
    finish_reason: str | None = "stop"
    logprobs: JSONObject | None = None


class ChatCompletion(msgspec.Struct):
    """``chat.completion`` object (``service_tier``: the tier that served it, when the
    upstream says)."""

    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    object: str = "chat.completion"
    system_fingerprint: str | None = None
    service_tier: str | None = None


class Delta(msgspec.Struct, omit_defaults=True):
    """Incremental message content in a streamed chunk (``reasoning_content`` and
    ``reasoning``: see :class:`ResponseMessage`)."""

    role: str | None = None
    content: str | None = None
    tool_calls: list[JSONObject] | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class ChunkChoice(msgspec.Struct):
    """One choice of a streamed chunk."""

    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: JSONObject | None = None


class ChatCompletionChunk(msgspec.Struct):
    """``chat.completion.chunk`` object."""

    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    object: str = "chat.completion.chunk"
    system_fingerprint: str | None = None
    service_tier: str | None = None


class StreamEnd(msgspec.Struct):
    """The last message of a streamed reply (``Llm-Stream: end``): totals for the stream."""

    usage: Usage | None = None
    finish_reason: str | None = None


class Model(msgspec.Struct):
    """One entry of the model list (``llm.models``), as OpenAI's ``GET /v1/models``."""

    id: str
    created: int
    owned_by: str
    object: str = "model"


class ModelList(msgspec.Struct):
    """The reply of ``llm.models``."""

    data: list[Model]
    object: str = "list"
