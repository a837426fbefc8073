"""The OpenAI Responses API through the real path (bridge, NATS, broker, worker) with the
official ``openai`` SDK unchanged: passed through to an OpenAI upstream exactly as sent,
translated to chat completions for the others (the mock, an OpenAI-compatible server)."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from edge_client import EdgeClient
from edge_client.errors import APIError
from tests.support import responses as responses_stack
from tests.support.responses import responses_config
from tests.support.stack import Stack, StackFactory
from tests.support.upstream import FakeOpenAI, Scripted, openai_completion

#: the recording fake of OpenAI itself (a fixture shared with the other Responses API tests)
openai_upstream = responses_stack.openai_upstream

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather by city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
async def stack(
    nats_url: str,
    fake_openai: FakeOpenAI,
    openai_upstream: FakeOpenAI,
    make_stack: StackFactory,
    namespace: str,
) -> Stack:
    config = responses_config(
        fake_openai.base_url,
        openai_upstream.base_url,
        """
        [cache]
        l2 = "off"
        [batch]
        enabled = false
        """,
    )
    return await make_stack(nats_url, config, bridge=True)


@pytest.fixture
def client(stack: Stack, namespace: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=stack.base_url,
        api_key="unused",
        max_retries=0,
        default_headers={"Llm-Cache-Namespace": namespace},
    )


async def test_whole_response_from_a_chat_only_upstream(client: openai.AsyncOpenAI) -> None:
    """A whole response from the mock: translated to chat and back, usage mapped."""
    response = await client.responses.create(
        model="mock", input="hello there", instructions="Be brief.", max_output_tokens=50
    )
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.model == "mock"
    assert "hello there" in response.output_text
    assert response.instructions == "Be brief."
    assert response.max_output_tokens == 50
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


async def test_streamed_response_events_in_order(client: openai.AsyncOpenAI) -> None:
    """A streamed response has the typed events in OpenAI's order, the text adding up."""
    stream = await client.responses.create(model="mock", input="stream me", stream=True)
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert "stream me" in text
    assert final.output_text == text
    assert final.usage is not None
    assert final.usage.output_tokens > 0


async def test_function_call_translated_both_ways(
    client: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    """Function tools, tool_choice, a call's output and a JSON schema reach a chat upstream
    in chat's shapes; its tool call comes back as a function_call item."""
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
    }
    completion = openai_completion("served-compat", "")
    completion["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [call],
    }
    completion["choices"][0]["finish_reason"] = "tool_calls"
    fake_openai.script.append(Scripted(body=completion))
    response = await client.responses.create(
        model="compat",
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "24 C"},
            {"role": "user", "content": [{"type": "input_text", "text": "And Oslo?"}]},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"},
        text={"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
        max_output_tokens=64,
    )
    sent = fake_openai.received[-1]
    assert sent.path.endswith("/chat/completions")
    assert sent.body["model"] == "served-compat"
    assert sent.body["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "24 C"},
        {"role": "user", "content": [{"type": "text", "text": "And Oslo?"}]},
    ]
    assert sent.body["tools"] == [
        {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    ]
    assert sent.body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}},
    }
    assert sent.body["max_tokens"] == 64
    (item,) = response.output
    assert item.type == "function_call"
    assert (item.call_id, item.name, item.arguments) == ("call_9", "get_weather", '{"city":"Oslo"}')


async def test_a_callers_own_history_field_reaches_no_upstream(
    client: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    """The field the broker uses to carry a conversation's earlier turns, sent by a caller,
    is dropped: the upstream sees the caller's input alone, not turns it claims."""
    claimed = {"items": [{"role": "user", "content": "turn that never happened"}]}
    response = await client.responses.create(
        model="compat", input="only this", extra_body={"llm_edge_history": claimed}
    )
    assert response.status == "completed"
    sent = fake_openai.received[-1].body
    assert "llm_edge_history" not in sent
    assert [m["content"] for m in sent["messages"]] == ["only this"]


async def test_built_in_tool_is_a_clear_400(client: openai.AsyncOpenAI) -> None:
    """A built-in tool cannot be translated: a 400 naming it, never a silent drop."""
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(
            model="mock",
            input="search the web",
            tools=[{"type": "web_search_preview"}],
        )
    body: Any = caught.value.body
    assert "tools[0].type" in body["message"]
    assert "web_search_preview" in body["message"]


async def test_passthrough_sends_the_body_as_written(
    client: openai.AsyncOpenAI, openai_upstream: FakeOpenAI
) -> None:
    """To an OpenAI upstream the body goes as the caller wrote it (the model mapped), and its
    answer comes back as the upstream gave it."""
    request: dict[str, Any] = {
        "model": "gpt",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "tools": [{"type": "web_search_preview"}],
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "low", "summary": "auto"},
        "store": False,
        "metadata": {"app": "x"},
    }
    extra = {"vendor_knob": {"beam": 4}}
    response = await client.responses.create(**request, extra_body=extra)
    sent = openai_upstream.received[-1]
    assert sent.path == "/v1/responses"
    assert sent.body == {**request, **extra, "model": "gpt-4.1"}
    assert response.id == "resp_upstream_1"
    assert response.output_text == "upstream says hi to gpt-4.1"


async def test_passthrough_stream_relays_the_upstream_events(
    client: openai.AsyncOpenAI, openai_upstream: FakeOpenAI
) -> None:
    """A streamed passthrough relays the upstream's events as they came."""
    stream = await client.responses.create(model="gpt", input="hi", stream=True)
    events = [event async for event in stream]
    assert openai_upstream.received[-1].body == {"model": "gpt-4.1", "input": "hi", "stream": True}
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert events[-1].response.id == "resp_upstream_1"  # type: ignore[union-attr]


async def test_streamed_request_served_from_cache_as_events(
    client: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    """A whole answer cached is served to a streamed twin as events, without an upstream call."""
    first = await client.responses.create(model="compat", input="cache me", temperature=0)
    calls = len(fake_openai.received)
    stream = await client.responses.create(
        model="compat", input="cache me", temperature=0, stream=True
    )
    events = [event async for event in stream]
    assert len(fake_openai.received) == calls
    assert events[-1].type == "response.completed"
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == first.output_text
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == first.output_text


async def test_python_client_responses(stack: Stack, namespace: str) -> None:
    """The Python client's responses(), response(), response_input_items(),
    cancel_response(), delete_response() and stream_responses() over NATS."""
    client = EdgeClient(stack.nc, namespace=namespace)
    created = await client.responses({"model": "mock", "input": "from the client"})
    assert created["status"] == "completed"
    assert "from the client" in created["output"][0]["content"][0]["text"]
    assert (await client.response(created["id"]))["output"] == created["output"]
    listed = await client.response_input_items(created["id"], limit=1)
    assert listed["object"] == "list"
    assert [item["content"] for item in listed["data"]] == [
        [{"type": "input_text", "text": "from the client"}]
    ]
    assert listed["has_more"] is False
    with pytest.raises(APIError) as refused:  # it did not run in the background
        await client.cancel_response(created["id"])
    assert refused.value.status == 400
    deleted = await client.delete_response(created["id"])
    assert deleted == {"id": created["id"], "object": "response", "deleted": True}
    with pytest.raises(APIError) as gone:
        await client.response(created["id"])
    assert gone.value.status == 404
    stream = client.stream_responses({"model": "mock", "input": "streamed", "store": False})
    events = [event async for event in stream]
    assert events[0].event == "response.created"
    assert events[-1].event == "response.completed"
    assert events[-1].data["response"]["status"] == "completed"
