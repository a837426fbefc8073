"""A chat-completions answer in the Responses API's shapes: a whole ``chat.completion`` as a
``response`` object (:func:`response_from_completion`), a chat stream as the Responses stream
events (:class:`ResponseWriter`).

Output items: the assistant's text is one ``message`` item (a refusal is its ``refusal``
part), each tool call a ``function_call`` item. A completion cut by its token cap is an
``incomplete`` response (``max_output_tokens``), as one stopped by a content filter
(``content_filter``). Usage is mapped to ``input_tokens`` / ``output_tokens``.
"""

from __future__ import annotations

from typing import Any

from schemas import ChatCompletion, ChatCompletionChunk, Usage
from schemas.response_events import ResponseStream, StreamEvent
from schemas.responses import ResponseStatus, new_id, response_object, usage_of_chat

__all__ = ["ResponseWriter", "response_from_completion"]

JSON = dict[str, Any]
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _status(finish_reason: str | None) -> tuple[str, str | None]:
    incomplete = _INCOMPLETE.get(finish_reason or "")
    return (ResponseStatus.INCOMPLETE if incomplete else ResponseStatus.COMPLETED), incomplete


def response_from_completion(
    completion: ChatCompletion, request: JSON, model: str, response_id: str
) -> JSON:
    """The ``response`` object for a whole chat completion (``request``: the Responses
    request's top-level fields; ``model``: the name its caller asked for)."""
    output: list[JSON] = []
    finish: str | None = None
    if completion.choices:
        choice = completion.choices[0]
        finish = choice.finish_reason
        message = choice.message
        parts: list[JSON] = []
        if message.content:
            parts.append({"type": "output_text", "text": message.content, "annotations": []})
        if message.refusal:
            parts.append({"type": "refusal", "refusal": message.refusal})
        if parts:
            output.append(
                {
                    "id": new_id("msg"),
                    "type": "message",
                    "status": ResponseStatus.COMPLETED,
                    "role": "assistant",
                    "content": parts,
                }
            )
        for call in message.tool_calls or ():
            output.append(
                {
                    "id": new_id("fc"),
                    "type": "function_call",
                    "status": ResponseStatus.COMPLETED,
                    "call_id": call.id,
                    "name": call.function.name,
                    "arguments": call.function.arguments,
                }
            )
    status, incomplete = _status(finish)
    body = response_object(
        request,
        response_id=response_id,
        model=model,
        status=status,
        output=output,
        usage=usage_of_chat(completion.usage),
        created_at=completion.created,
        incomplete=incomplete,
    )
    return _served(body, completion.service_tier)


def _served(body: JSON, tier: str | None) -> JSON:
    """``body`` naming the tier that served it, when the upstream named one (the meter
    prices a response at its ``service_tier``'s rates)."""
    if tier is not None:
        body["service_tier"] = tier
    return body


class ResponseWriter:
    """A chat stream's chunks as Responses events.

    Args:
        request: the Responses request's top-level fields.
        model: the model name its caller asked for.
        response_id: the response's id.
    """

    def __init__(self, request: JSON, model: str, response_id: str) -> None:
        skeleton = response_object(
            request,
            response_id=response_id,
            model=model,
            status=ResponseStatus.IN_PROGRESS,
            output=[],
        )
        self._request = request
        self._model = model
        self._stream = ResponseStream(skeleton)
        self._started = False
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._tier: str | None = None
        #: a tool call's index in the chunks -> whether it was opened
        self._calls: set[int] = set()

    def chunk(self, chunk: ChatCompletionChunk) -> list[StreamEvent]:
        """The events one chunk makes."""
        events = [] if self._started else self._stream.start()
        self._started = True
        self._tier = chunk.service_tier or self._tier
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices[:1]:
            delta = choice.delta
            if delta.content:
                events += self._stream.text(delta.content)
            for call in delta.tool_calls or ():
                events += self._call(call)
            self._finish = choice.finish_reason or self._finish
        return events

    def _call(self, call: JSON) -> list[StreamEvent]:
        index = int(call.get("index", 0))
        function = call.get("function") or {}
        events = []
        if index not in self._calls:
            self._calls.add(index)
            call_id = str(call.get("id") or new_id("call"))
            events += self._stream.call(call_id, str(function.get("name") or ""))
        events += self._stream.arguments(str(function.get("arguments") or ""))
        return events

    def finish(self) -> list[StreamEvent]:
        """The events that close the stream (``response.completed`` last)."""
        events = [] if self._started else self._stream.start()
        self._started = True
        events += self._stream.close()
        status, incomplete = _status(self._finish)
        skeleton = self._stream.response
        final = {
            **skeleton,
            "status": status,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "output": self._stream.output,
            "usage": usage_of_chat(self._usage),
        }
        return events + self._stream.finish(_served(final, self._tier))
