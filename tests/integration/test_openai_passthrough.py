"""Chat completions through the real path (bridge, NATS, broker, worker) to a fake OpenAI that
records what it received: every request field reaches the upstream as sent (model mapped),
every answer field the caller as given, streamed chunks included (a compatible server's own
delta fields too), and the cache keys all of it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted, openai_completion

#: Request fields of every kind OpenAI documents, nested ones a compatible server may read,
#: and one nobody knows yet.
RICH_CHAT: dict[str, Any] = {
    "model": "gpt",
    "messages": [
        {"role": "developer", "content": "Answer in JSON.", "vendor_hint": {"priority": 2}},
        {"role": "user", "name": "ada", "content": [{"type": "text", "text": "Weather?"}]},
        {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "audio": {"id": "audio_abc123"},
            "annotations": [],
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "24 C"},
    ],
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "weather",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"summary": {"type": "string"}},
                "required": ["summary"],
                "additionalProperties": False,
            },
        },
    },
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            },
        },
        {"type": "custom", "custom": {"name": "shell", "format": {"type": "text"}}},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "logprobs": True,
    "top_logprobs": 3,
    "n": 2,
    "seed": 7,
    "reasoning_effort": "low",
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "wav"},
    "store": True,
    "prediction": {"type": "content", "content": '{"summary": "sunny"}'},
    "metadata": {"app": "weather"},
    "user": "user-7",
    "vendor_knob": {"beam": 4},
}

LOGPROBS = {
    "content": [{"token": "{", "logprob": -0.01, "bytes": [123], "top_logprobs": []}],
    "refusal": None,
}


def rich_completion() -> dict[str, Any]:
    """An answer with what OpenAI's documented answers carry, and a field of a vendor's own."""
    body = openai_completion("gpt-4o", '{"summary": "sunny"}')
    first = body["choices"][0]
    first["logprobs"] = LOGPROBS
    first["message"]["audio"] = {"id": "audio_1", "data": "UklGRg==", "transcript": "sunny"}
    first["message"]["annotations"] = [{"type": "url_citation", "url_citation": {"url": "u"}}]
    body["choices"].append({**copy.deepcopy(first), "index": 1})
    body["vendor_stats"] = {"queue_ms": 3}
    return body


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-r1",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "gpt-4o",
        "service_tier": "default",
        "system_fingerprint": "fp_1",
        "obfuscation": "Xj2",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


def reasoning_stream() -> list[dict[str, Any]]:
    """A compatible server's stream: thinking in ``reasoning_content`` before the answer."""
    return [
        chunk({"role": "assistant", "content": None, "reasoning_content": ""}),
        chunk({"reasoning_content": "The user asks "}),
        chunk({"reasoning_content": "about Paris."}),
        chunk({"content": "Sunny"}),
        chunk({"content": " and warm."}),
        chunk({}, "stop"),
        {
            **chunk({}),
            "choices": [],
            "usage": {
                "prompt_tokens": 9,
                "completion_tokens": 12,
                "total_tokens": 21,
                "completion_tokens_details": {"reasoning_tokens": 7},
            },
        },
    ]


def sse(chunks: list[dict[str, Any]]) -> list[bytes]:
    return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]


def data_lines(text: str) -> list[Any]:
    lines = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.fixture
async def stack(nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory) -> Stack:
    config = config_from(f"""
        [cache]
        l2 = "off"
        [batch]
        enabled = false
        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        [models.gpt]
        deployments = [{{ provider = "up", model = "gpt-4o" }}]
    """)
    return await make_stack(nats_url, config, bridge=True)


async def test_every_field_reaches_the_upstream_and_every_answer_field_the_caller(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """response_format, tools (a custom one too), parallel_tool_calls, logprobs, n, seed,
    reasoning_effort, modalities, audio, store, prediction and unknown fields at any depth go
    upstream as sent (model mapped); the answer (logprobs, audio, annotations, a vendor's own
    field, two choices) comes back unchanged."""
    assert stack.http is not None
    answer = rich_completion()
    fake_openai.script.append(Scripted(body=answer))
    response = await stack.http.post("/chat/completions", json=RICH_CHAT)
    assert response.status_code == 200, response.text
    assert fake_openai.received[-1].body == {**RICH_CHAT, "model": "gpt-4o"}
    assert response.json() == answer


async def test_streamed_chunks_reach_the_caller_as_the_upstream_sent_them(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """Each chunk, with fields our contract does not name (``obfuscation``, a vendor's
    ``x_vendor``, ``reasoning_content`` deltas, usage details), reaches the caller unchanged."""
    assert stack.http is not None
    chunks = reasoning_stream()
    chunks[3]["x_vendor"] = {"queue_ms": 2}
    fake_openai.script.append(Scripted(raw_sse=sse(chunks)))
    body = {**RICH_CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response = await stack.http.post("/chat/completions", json=body)
    assert response.status_code == 200
    assert data_lines(response.text) == chunks
    assert fake_openai.received[-1].body == {**body, "model": "gpt-4o"}


async def test_the_cache_key_covers_every_field_that_changes_the_answer(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """A repeat is a hit; a change in a nested field the contract does not name, or in
    reasoning_effort, is a miss; a change in user, store or metadata is not (a hit)."""
    assert stack.http is not None

    async def ask(body: dict[str, Any]) -> str:
        fake_openai.script.append(Scripted(body=rich_completion()))
        response = await stack.http.post("/chat/completions", json=body)  # type: ignore[union-attr]
        assert response.status_code == 200
        return str(response.headers["x-cache"])

    hinted = copy.deepcopy(RICH_CHAT)
    hinted["messages"][0]["vendor_hint"] = {"priority": 3}
    assert await ask(RICH_CHAT) == "MISS"
    assert await ask(RICH_CHAT) == "HIT-L1"
    assert await ask(hinted) == "MISS"
    assert await ask({**RICH_CHAT, "reasoning_effort": "high"}) == "MISS"
    assert await ask({**RICH_CHAT, "user": "u2", "store": False, "metadata": {}}) == "HIT-L1"
    assert len(fake_openai.received) == 3


async def test_a_stream_with_reasoning_is_stored_and_replayed_with_it(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """A stream whose deltas carry reasoning_content is stored: a whole request gets it in
    its message, a streamed repeat gets it in its deltas, without another upstream call."""
    assert stack.http is not None
    fake_openai.script.append(Scripted(raw_sse=sse(reasoning_stream())))
    body: dict[str, Any] = {
        "model": "gpt",
        "messages": [{"role": "user", "content": "Paris?"}],
        "stream": True,
    }
    first = await stack.http.post("/chat/completions", json=body)
    assert first.headers["x-cache"] == "MISS"
    whole = await stack.http.post("/chat/completions", json={**body, "stream": False})
    message = whole.json()["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == (
        "The user asks about Paris.",
        "Sunny and warm.",
    )
    assert whole.json()["usage"]["completion_tokens_details"] == {"reasoning_tokens": 7}
    again = await stack.http.post("/chat/completions", json=body)
    assert again.headers["x-cache"] == "HIT-L1"
    deltas = [c["choices"][0]["delta"] for c in data_lines(again.text) if c["choices"]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == message["reasoning_content"]
    assert "".join(d.get("content") or "" for d in deltas) == "Sunny and warm."
    assert len(fake_openai.received) == 1


async def test_a_stream_that_cannot_be_rebuilt_is_relayed_but_not_stored(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """A delta field the broker does not know reaches the caller, but such a stream is not
    stored (its answer could not be rebuilt whole): the repeat goes upstream again."""
    assert stack.http is not None
    chunks = reasoning_stream()
    chunks[3]["choices"][0]["delta"]["vendor_trace"] = "t-1"
    body = {"model": "gpt", "messages": [{"role": "user", "content": "Rome?"}], "stream": True}
    for expected in ("MISS", "MISS"):
        fake_openai.script.append(Scripted(raw_sse=sse(chunks)))
        response = await stack.http.post("/chat/completions", json=body)
        assert response.headers["x-cache"] == expected
        relayed = [c for c in data_lines(response.text) if c["choices"]]
        assert relayed[3]["choices"][0]["delta"]["vendor_trace"] == "t-1"
    assert len(fake_openai.received) == 2
