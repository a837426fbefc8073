"""OpenAI chat-completions <-> Gemini ``generateContent``, the provider direction.

Requests go out as ``GenerateContentRequest`` bodies (Google AI Studio and Vertex AI take the
same one); answers and ``streamGenerateContent?alt=sse`` events come back as OpenAI
``chat.completion`` / ``chat.completion.chunk``. Pure functions: no I/O.

Gemini's function calls carry no id the caller could send back (AI Studio leaves it out), and
Gemini 3 models sign each call (``thoughtSignature``) and refuse a conversation that returns a
call without its signature. So the OpenAI tool-call id we hand out carries the signature
(``call_<random>`` then ``_ts_`` and the signature in URL-safe base64: only the characters
tool ids may hold), and a tool result is matched to its call's name through the assistant
message that made the call.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
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
from schemas.usage import CACHED_TOKENS
from workers.chat_parts import content_blocks, data_url, image_url, joined_text

__all__ = [
    "FINISH_REASONS",
    "StreamTranslator",
    "completion_from_gemini",
    "to_gemini_request",
    "usage_from_gemini",
]

JSON = dict[str, Any]

#: Gemini ``finishReason`` -> OpenAI ``finish_reason`` (a candidate with function calls
#: finishes with ``tool_calls`` whatever Gemini says).
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_SIGNATURE_MARK = "_ts_"


# requests


def _call_id(signature: str | None) -> str:
    call_id = f"call_{secrets.token_hex(12)}"
    if not signature:
        return call_id
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return call_id  # not base64: Gemini would not take it back either
    return call_id + _SIGNATURE_MARK + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _signature(call_id: str) -> str | None:
    """The ``thoughtSignature`` a tool-call id carries, in Gemini's standard base64."""
    _, mark, encoded = call_id.partition(_SIGNATURE_MARK)
    if not mark or not encoded:
        return None
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return None
    return base64.b64encode(raw).decode()


def _image_part(part: JSON) -> JSON:
    url = image_url(part)
    inline = data_url(url)
    if inline is not None:
        mime_type, data = inline
        return {"inlineData": {"mimeType": mime_type, "data": data}}
    mime_type = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
    return {"fileData": {"mimeType": mime_type, "fileUri": url}}


def _arguments(raw: str) -> JSON:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}


def _function_response(message: Message, names: dict[str, str]) -> JSON:
    """A tool message as a ``functionResponse`` part (Gemini wants an object: a result that
    is not one goes in ``output``, the key Google's SDK uses)."""
    text = joined_text(message.content)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    call_id = message.tool_call_id or ""
    return {
        "functionResponse": {
            "name": names.get(call_id, message.name or ""),
            "response": value if isinstance(value, dict) else {"output": value},
        }
    }


def _content(message: Message, names: dict[str, str]) -> tuple[str, list[JSON]]:
    """The Gemini role and parts of one OpenAI message (non-system)."""
    if message.role == "tool":
        return "user", [_function_response(message, names)]
    if message.role != "assistant":
        return "user", content_blocks(message.content, _image_part)
    parts = content_blocks(message.content, _image_part)
    for call in message.tool_calls or ():
        names[call.id] = call.function.name
        part: JSON = {
            "functionCall": {
                "name": call.function.name,
                "args": _arguments(call.function.arguments),
            }
        }
        signature = _signature(call.id)
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return "model", parts


def _tool_config(choice: str | JSON | None) -> JSON | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(choice, "AUTO")
        return {"functionCallingConfig": {"mode": mode}}
    name = str((choice.get("function") or {}).get("name", ""))
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}


def _generation_config(request: ChatRequest) -> JSON:
    config: JSON = {}
    max_tokens = request.max_completion_tokens or request.max_tokens
    for key, value in (
        ("temperature", request.temperature),
        ("topP", request.top_p),
        ("maxOutputTokens", max_tokens),
        ("candidateCount", request.n),
        ("seed", request.seed),
        ("presencePenalty", request.presence_penalty),
        ("frequencyPenalty", request.frequency_penalty),
    ):
        if value is not None:
            config[key] = value
    if request.stop:
        config["stopSequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    response_format = request.response_format or {}
    if response_format.get("type") in {"json_object", "json_schema"}:
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is not None:
            config["responseJsonSchema"] = schema  # JSON Schema as it is, not the OpenAPI subset
    return config


def to_gemini_request(request: ChatRequest) -> JSON:
    """The ``generateContent`` body for an OpenAI-shaped request (the model goes in the URL).

    System and developer messages become ``systemInstruction``; consecutive turns of one role
    merge (the function responses of one model turn must arrive together).
    """
    system: list[str] = []
    contents: list[JSON] = []
    names: dict[str, str] = {}  # tool-call id -> function name
    for message in request.messages:
        if message.role in {"system", "developer"}:
            system.append(joined_text(message.content))
            continue
        role, parts = _content(message, names)
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    body: JSON = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    if request.tools:
        declarations = []
        for tool in request.tools:
            function = tool.function
            if function is None:
                raise ValueError(f"Gemini takes function tools only, not `{tool.type}` tools")
            declaration: JSON = {"name": function.name}
            if function.description:
                declaration["description"] = function.description
            parameters = function.parameters
            if parameters and parameters.get("properties"):  # Gemini refuses an empty object
                declaration["parametersJsonSchema"] = parameters
            declarations.append(declaration)
        body["tools"] = [{"functionDeclarations": declarations}]
        tool_config = _tool_config(request.tool_choice)
        if tool_config is not None:
            body["toolConfig"] = tool_config
    generation = _generation_config(request)
    if generation:
        body["generationConfig"] = generation
    return body


# answers


def usage_from_gemini(raw: JSON | None) -> Usage:
    """OpenAI usage from ``usageMetadata``: thinking tokens are billed as output, as OpenAI
    counts reasoning tokens in ``completion_tokens``; ``cachedContentTokenCount`` is
    ``prompt_tokens_details.cached_tokens``."""
    raw = raw or {}
    prompt = int(raw.get("promptTokenCount") or 0) + int(raw.get("toolUsePromptTokenCount") or 0)
    completion = int(raw.get("candidatesTokenCount") or 0) + int(raw.get("thoughtsTokenCount") or 0)
    # promptTokenCount includes the tokens read from a cached content (as OpenAI's
    # prompt_tokens includes cached_tokens); writing a cache is a call of its own, not an answer
    cached = raw.get("cachedContentTokenCount")
    details = None if cached is None else {CACHED_TOKENS: int(cached or 0)}
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=details,
    )


def _tool_call(call: JSON, signature: str | None) -> ToolCall:
    arguments = json.dumps(call.get("args") or {}, separators=(",", ":"))
    return ToolCall(
        id=str(call.get("id") or "") or _call_id(signature),
        function=FunctionCall(name=str(call.get("name", "")), arguments=arguments),
    )


def _finish(candidate: JSON, has_calls: bool) -> str:
    if has_calls:
        return "tool_calls"
    return FINISH_REASONS.get(str(candidate.get("finishReason")), "stop")


def _choice(candidate: JSON, position: int) -> Choice:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if part.get("thought"):
            continue  # a thought summary is not the answer
        if "text" in part:
            texts.append(str(part["text"]))
        elif "functionCall" in part:
            calls.append(_tool_call(part["functionCall"], part.get("thoughtSignature")))
    message = ResponseMessage(
        role="assistant",
        content="".join(texts) if texts or not calls else None,
        tool_calls=calls or None,
    )
    index = int(candidate.get("index") or position)
    return Choice(index=index, message=message, finish_reason=_finish(candidate, bool(calls)))


def completion_from_gemini(body: JSON, model: str, created: int) -> ChatCompletion:
    """An OpenAI ``chat.completion`` from a ``GenerateContentResponse``.

    A prompt Gemini blocked (no candidates, a ``promptFeedback.blockReason``) is an empty
    answer finished by ``content_filter``, as OpenAI reports a filtered completion.

    Raises:
        ValueError: the body holds neither candidates nor a prompt verdict.
    """
    candidates = body.get("candidates") or []
    choices = [_choice(c, i) for i, c in enumerate(candidates)]
    if not choices:
        if not (body.get("promptFeedback") or {}).get("blockReason"):
            raise ValueError("a generateContent response without candidates")
        empty = ResponseMessage(role="assistant", content="")
        choices = [Choice(index=0, message=empty, finish_reason="content_filter")]
    return ChatCompletion(
        id=_completion_id(body),
        created=created,
        model=str(body.get("modelVersion") or model),
        choices=choices,
        usage=usage_from_gemini(body.get("usageMetadata")),
    )


def _completion_id(body: JSON) -> str:
    response_id = body.get("responseId")
    return f"chatcmpl-{response_id}" if response_id else f"chatcmpl-{secrets.token_hex(12)}"


@dataclass(slots=True)
class StreamTranslator:
    """``streamGenerateContent`` events in, OpenAI chunks out (``feed`` returns 0..n chunks).

    Gemini's stream has no terminator event: it is whole when every candidate that spoke has
    a ``finishReason`` (or the prompt was blocked); :attr:`finished` says so.
    """

    model: str
    created: int
    id: str = ""
    usage: Usage | None = None
    _started: set[int] = field(default_factory=set)
    _open: set[int] = field(default_factory=set)  # candidates that spoke and did not finish
    _calls: dict[int, int] = field(default_factory=dict)  # tool calls so far, per candidate
    _blocked: bool = False

    @property
    def finished(self) -> bool:
        """Whether the stream so far is a whole answer."""
        return self._blocked or (bool(self._started) and not self._open)

    def _chunk(
        self, index: int, delta: Delta | None, finish: str | None = None, usage: Usage | None = None
    ) -> ChatCompletionChunk:
        choices = [] if delta is None else [ChunkChoice(index, delta, finish)]
        return ChatCompletionChunk(self.id, self.created, self.model, choices, usage=usage)

    def feed(self, event: JSON) -> list[ChatCompletionChunk]:
        """Translate one event (an ``error`` event is the caller's to raise)."""
        if not self.id:
            self.id = _completion_id(event)
            self.model = str(event.get("modelVersion") or self.model)
        if event.get("usageMetadata"):
            self.usage = usage_from_gemini(event["usageMetadata"])  # cumulative: the last wins
        chunks: list[ChatCompletionChunk] = []
        for position, candidate in enumerate(event.get("candidates") or ()):
            chunks += self._candidate(int(candidate.get("index") or position), candidate)
        if not self._started and (event.get("promptFeedback") or {}).get("blockReason"):
            self._blocked = True
            self._started.add(0)
            chunks.append(self._chunk(0, Delta(role="assistant", content="")))
            chunks.append(self._chunk(0, Delta(), "content_filter"))
        return chunks

    def _candidate(self, index: int, candidate: JSON) -> list[ChatCompletionChunk]:
        chunks: list[ChatCompletionChunk] = []
        if index not in self._started:
            self._started.add(index)
            self._open.add(index)
            chunks.append(self._chunk(index, Delta(role="assistant", content="")))
        for part in (candidate.get("content") or {}).get("parts") or ():
            if part.get("thought"):
                continue
            if part.get("text"):
                chunks.append(self._chunk(index, Delta(content=str(part["text"]))))
            elif "functionCall" in part:
                chunks.append(self._chunk(index, Delta(tool_calls=[self._call(index, part)])))
        reason = candidate.get("finishReason")
        if reason:
            self._open.discard(index)
            finish = _finish(candidate, bool(self._calls.get(index)))
            chunks.append(self._chunk(index, Delta(), finish))
        return chunks

    def _call(self, index: int, part: JSON) -> JSON:
        position = self._calls.get(index, 0)
        self._calls[index] = position + 1
        call = _tool_call(part["functionCall"], part.get("thoughtSignature"))
        return {
            "index": position,
            "id": call.id,
            "type": "function",
            "function": {"name": call.function.name, "arguments": call.function.arguments},
        }

    def usage_chunk(self) -> ChatCompletionChunk | None:
        """The closing usage-only chunk, when the stream reported usage."""
        return None if self.usage is None else self._chunk(0, None, usage=self.usage)
