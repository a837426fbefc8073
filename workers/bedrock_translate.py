"""OpenAI chat-completions <-> Bedrock Converse, the provider direction.

Requests go out as Converse bodies (the model goes in the URL); ``Converse`` answers and
``ConverseStream`` events come back as OpenAI ``chat.completion`` /
``chat.completion.chunk``. One shape for every Bedrock model (Claude, Nova, Llama, Mistral
...): Converse is Bedrock's model-neutral API. Pure functions: no I/O.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    Message,
    ResponseMessage,
    ToolCall,
    Usage,
)
from schemas.chat import Tool
from schemas.usage import CACHE_WRITE_TOKENS, CACHED_TOKENS
from workers.chat_parts import content_blocks, data_url, image_url, joined_text

__all__ = [
    "STOP_REASONS",
    "StreamTranslator",
    "completion_from_converse",
    "completion_id",
    "to_converse_request",
    "usage_from_converse",
]

JSON = dict[str, Any]

#: Converse ``stopReason`` -> OpenAI ``finish_reason``.
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def _image_block(part: JSON) -> JSON:
    """Converse takes image bytes (base64 in JSON) or an S3 object, never a web URL.

    Raises:
        ValueError: a URL Bedrock cannot read, or an image format it does not take.
    """
    url = image_url(part)
    if url.startswith("s3://"):
        extension = url.rsplit(".", 1)[-1].lower()
        image_format = "jpeg" if extension == "jpg" else extension
        return {"image": {"format": image_format, "source": {"s3Location": {"uri": url}}}}
    inline = data_url(url)
    if inline is None:
        raise ValueError("Bedrock takes images as data: URLs (base64) or s3:// URIs")
    media_type, data = inline
    known = _IMAGE_FORMATS.get(media_type)
    if known is None:
        raise ValueError(f"Bedrock does not take {media_type} images")
    return {"image": {"format": known, "source": {"bytes": data}}}


def _tool_result(message: Message) -> JSON:
    text = joined_text(message.content)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    content = [{"json": value}] if isinstance(value, dict) else [{"text": text or " "}]
    return {"toolResult": {"toolUseId": message.tool_call_id or "", "content": content}}


def _message(message: Message) -> tuple[str, list[JSON]]:
    """The Converse role and content blocks of one OpenAI message (non-system)."""
    if message.role == "tool":
        return "user", [_tool_result(message)]
    if message.role != "assistant":
        return "user", content_blocks(message.content, _image_block)
    blocks = content_blocks(message.content, _image_block)
    for call in message.tool_calls or ():
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError:
            arguments = {"_raw": call.function.arguments}
        blocks.append(
            {"toolUse": {"toolUseId": call.id, "name": call.function.name, "input": arguments}}
        )
    return "assistant", blocks


def _tool_spec(tool: Tool) -> JSON:
    function = tool.function
    if function is None:
        raise ValueError(f"Bedrock takes function tools only, not `{tool.type}` tools")
    return {
        "toolSpec": {
            "name": function.name,
            "description": function.description or function.name,
            "inputSchema": {"json": function.parameters or {"type": "object", "properties": {}}},
        }
    }


def _tool_config(request: ChatRequest) -> JSON:
    tools = [_tool_spec(t) for t in request.tools or ()]
    config: JSON = {"tools": tools}
    choice = request.tool_choice
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif isinstance(choice, dict):
        name = str((choice.get("function") or {}).get("name", ""))
        config["toolChoice"] = {"tool": {"name": name}}
    return config  # "none" has no Converse counterpart: the tools stay, unforced


def _inference_config(request: ChatRequest) -> JSON:
    config: JSON = {}
    max_tokens = request.max_completion_tokens or request.max_tokens
    for key, value in (
        ("maxTokens", max_tokens),
        ("temperature", request.temperature),
        ("topP", request.top_p),
    ):
        if value is not None:
            config[key] = value
    if request.stop:
        config["stopSequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    return config


def _output_config(request: ChatRequest) -> JSON | None:
    response_format = request.response_format or {}
    schema = response_format.get("json_schema") or {}
    if response_format.get("type") != "json_schema" or "schema" not in schema:
        return None
    definition = {
        "name": str(schema.get("name") or "response"),
        "schema": json.dumps(schema["schema"]),
    }
    if schema.get("description"):
        definition["description"] = str(schema["description"])
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}


def to_converse_request(request: ChatRequest) -> JSON:
    """The Converse body for an OpenAI-shaped request.

    System and developer messages become ``system``; consecutive turns of one role merge
    (Converse wants them alternating, and the tool results of one turn together).

    Raises:
        ValueError: content Bedrock cannot take (an image by web URL).
    """
    system: list[JSON] = []
    messages: list[JSON] = []
    for message in request.messages:
        if message.role in {"system", "developer"}:
            text = joined_text(message.content)
            if text:
                system.append({"text": text})
            continue
        role, blocks = _message(message)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    body: JSON = {"messages": messages}
    if system:
        body["system"] = system
    inference = _inference_config(request)
    if inference:
        body["inferenceConfig"] = inference
    if request.tools:
        body["toolConfig"] = _tool_config(request)
    output = _output_config(request)
    if output is not None:
        body["outputConfig"] = output
    return body


def usage_from_converse(raw: JSON | None) -> Usage:
    """OpenAI usage from Converse's: cache reads and writes are prompt tokens too, and the
    cache's share is in ``prompt_tokens_details`` (:mod:`schemas.usage`)."""
    raw = raw or {}
    read = int(raw.get("cacheReadInputTokens") or 0)
    write = int(raw.get("cacheWriteInputTokens") or 0)
    prompt = int(raw.get("inputTokens") or 0) + read + write
    completion = int(raw.get("outputTokens") or 0)
    reported = "cacheReadInputTokens" in raw or "cacheWriteInputTokens" in raw
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details={CACHED_TOKENS: read, CACHE_WRITE_TOKENS: write}
        if reported
        else None,
    )


def completion_id(request_id: str) -> str:
    """A completion id from Bedrock's request id (Converse answers carry no id of their own)."""
    return f"chatcmpl-{request_id or secrets.token_hex(12)}"


def completion_from_converse(
    body: JSON, model: str, created: int, request_id: str
) -> ChatCompletion:
    """An OpenAI ``chat.completion`` from a Converse answer.

    Raises:
        ValueError: the body has no ``output.message``.
    """
    message = (body.get("output") or {}).get("message")
    if not isinstance(message, dict):
        raise ValueError("a Converse answer without output.message")  # noqa: TRY004  (a bad answer, not a bad argument)
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in message.get("content") or ():
        if "text" in block:
            texts.append(str(block["text"]))
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append(
                ToolCall(
                    id=str(use.get("toolUseId", "")),
                    function=FunctionCall(
                        name=str(use.get("name", "")),
                        arguments=json.dumps(use.get("input") or {}, separators=(",", ":")),
                    ),
                )
            )
    answer = ResponseMessage(
        role="assistant",
        content="".join(texts) if texts or not calls else None,
        tool_calls=calls or None,
    )
    finish = STOP_REASONS.get(str(body.get("stopReason")), "stop")
    return ChatCompletion(
        id=completion_id(request_id),
        created=created,
        model=model,
        choices=[Choice(index=0, message=answer, finish_reason=finish)],
        usage=usage_from_converse(body.get("usage")),
    )


@dataclass(slots=True)
class StreamTranslator:
    """ConverseStream events in (their ``:event-type`` and JSON payload), OpenAI chunks out.

    The stream is whole once ``messageStop`` arrived (:attr:`stopped`); usage comes after
    it, in ``metadata``.
    """

    id: str
    model: str
    created: int
    stopped: bool = False
    usage: Usage | None = None
    _tools: dict[int, int] = field(default_factory=dict)  # block index -> tool-call index

    def _chunk(
        self, delta: Delta | None, finish: str | None = None, usage: Usage | None = None
    ) -> ChatCompletionChunk:
        choices = [] if delta is None else [ChunkChoice(0, delta, finish)]
        return ChatCompletionChunk(self.id, self.created, self.model, choices, usage=usage)

    def feed(self, event_type: str, event: JSON) -> list[ChatCompletionChunk]:  # noqa: PLR0911
        """Translate one event (exceptions are the caller's to raise)."""
        if event_type == "messageStart":
            return [self._chunk(Delta(role="assistant", content=""))]
        if event_type == "contentBlockStart":
            use = (event.get("start") or {}).get("toolUse")
            if not use:
                return []
            index = len(self._tools)
            self._tools[int(event.get("contentBlockIndex", 0))] = index
            call = {
                "index": index,
                "id": use.get("toolUseId", ""),
                "type": "function",
                "function": {"name": use.get("name", ""), "arguments": ""},
            }
            return [self._chunk(Delta(tool_calls=[call]))]
        if event_type == "contentBlockDelta":
            return self._delta(event)
        if event_type == "messageStop":
            self.stopped = True
            finish = STOP_REASONS.get(str(event.get("stopReason")), "stop")
            return [self._chunk(Delta(), finish)]
        if event_type == "metadata":
            self.usage = usage_from_converse(event.get("usage"))
            return [self._chunk(None, usage=self.usage)]
        return []  # contentBlockStop

    def _delta(self, event: JSON) -> list[ChatCompletionChunk]:
        delta = event.get("delta") or {}
        if "text" in delta:
            return [self._chunk(Delta(content=str(delta["text"])))]
        if "toolUse" in delta:
            index = self._tools.get(int(event.get("contentBlockIndex", 0)), 0)
            arguments = str((delta["toolUse"] or {}).get("input", ""))
            call = {"index": index, "function": {"arguments": arguments}}
            return [self._chunk(Delta(tool_calls=[call]))]
        return []  # reasoning content has no OpenAI counterpart
