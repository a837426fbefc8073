"""The Responses API objects and stream events the broker writes, decoded with the official
``openai`` SDK's models in strict mode (a missing or mistyped field fails)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from openai.types.responses import Response, ResponseItemList, ResponseStreamEvent
from pydantic import TypeAdapter

from schemas import ChatCompletion, ChatCompletionChunk
from schemas.response_events import StreamEvent, replay_events
from schemas.responses import input_items, listed_item
from workers.responses_from_chat import ResponseWriter, response_from_completion

_events = TypeAdapter(ResponseStreamEvent)


def _completion(finish: str, **message: Any) -> ChatCompletion:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "finish_reason": finish, "message": {"role": "assistant", **message}}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    return msgspec.convert(body, ChatCompletion)


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> Any:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return msgspec.convert({**body, "choices": choices, **extra}, ChatCompletionChunk)


_TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def _streamed(finish: str) -> list[StreamEvent]:
    writer = ResponseWriter({"model": "m", "stream": True}, "m", "resp_2")
    events: list[StreamEvent] = []
    for chunk in (
        _chunk({"role": "assistant", "content": "hel"}),
        _chunk({"content": "lo"}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f"}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, finish),
        _chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
    ):
        events += writer.chunk(chunk)
    return events + writer.finish()


def _validated(events: list[StreamEvent]) -> list[Any]:
    """Each event decoded by the SDK; its name is its ``type``, its numbers in sequence."""
    decoded = [_events.validate_python(data, strict=True) for _, data in events]
    assert [event.type for event in decoded] == [name for name, _ in events]
    assert [event.sequence_number for event in decoded] == list(range(len(events)))
    return decoded


@pytest.mark.parametrize(
    ("finish", "status"), [("tool_calls", "completed"), ("length", "incomplete")]
)
def test_whole_response_decodes_with_text_refusal_and_tool_call(finish: str, status: str) -> None:
    """A translated completion is a valid SDK ``Response`` with every part in place."""
    completion = _completion(finish, content="hi", refusal="no", tool_calls=[_TOOL_CALL])
    body = response_from_completion(completion, {"model": "m"}, "m", "resp_1")
    response = Response.model_validate(body, strict=True)
    assert response.status == status
    assert response.output_text == "hi"
    message, call = response.output
    assert message.type == "message"
    assert [part.type for part in message.content] == ["output_text", "refusal"]
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == ("call_1", "f", "{}")
    assert response.usage is not None
    assert response.usage.input_tokens_details.cache_write_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert response.usage.total_tokens == 7


def test_stream_events_decode_in_order_with_tool_call() -> None:
    """A streamed answer with text then a tool call: every event decodes, in OpenAI's order."""
    decoded = _validated(_streamed("tool_calls"))
    assert [event.type for event in decoded] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    arguments_done = decoded[12]
    assert (arguments_done.arguments, arguments_done.item_id) == ('{"a":1}', decoded[9].item.id)
    final = decoded[-1].response
    assert final.output_text == "hello"
    assert final.usage is not None
    assert final.usage.output_tokens == 4


def test_stream_cut_by_token_cap_ends_incomplete() -> None:
    """A stream stopped at its token cap ends with ``response.incomplete``."""
    last = _validated(_streamed("length"))[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details.reason == "max_output_tokens"


def test_added_items_show_the_item_as_it_began() -> None:
    """``output_item.added`` carries the new item, not what it became later in the stream."""
    completion = _completion("tool_calls", content="hi", tool_calls=[_TOOL_CALL])
    body = response_from_completion(completion, {"model": "m"}, "m", "resp_1")
    for events in (_streamed("tool_calls"), replay_events(body)):
        added = [e.item for e in _validated(events) if e.type == "response.output_item.added"]
        assert [item.status for item in added] == ["in_progress", "in_progress"]
        assert added[0].content == []
        assert added[1].arguments == ""


def test_input_item_list_decodes() -> None:
    """Stored input items, listed, are a valid SDK ``ResponseItemList``."""
    items = [
        listed_item(item)
        for item in input_items(
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "x"},
            ]
        )
    ]
    page = {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"],
        "last_id": items[-1]["id"],
        "has_more": False,
    }
    listed = ResponseItemList.model_validate(page, strict=True)
    assert [item.type for item in listed.data] == [
        "message",
        "message",
        "function_call",
        "function_call_output",
    ]
