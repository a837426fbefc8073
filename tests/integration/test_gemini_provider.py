"""Gemini (Google AI Studio) and Gemini on Vertex AI behind the broker, end to end: the
official SDKs through the bridge and producers over NATS, a real broker and workers, and a
fake Google that checks keys, tokens, signed assertions and bodies."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_client.chat import stream_chat
from schemas import headers
from tests.support.fake_google import (
    FakeGoogle,
    GeminiAnswer,
    google_error,
    running_google,
)
from tests.support.provider_calls import (
    WEATHER_TOOL,
    answer_the_call,
    anthropic_sdk,
    call_for_the_tool,
    chat_over_nats,
    error_of,
    finish_reasons,
    openai_sdk,
    streamed_text,
    text_until_error,
    tool_call_deltas,
)
from tests.support.stack import Stack, StackFactory, config_from

PRICES = "input_price = 0.3, output_price = 2.5"
SIGNATURE = base64.b64encode(b"\x00\xffopaque thought signature\xfe").decode()


@pytest.fixture
async def google(tmp_path: Path) -> AsyncIterator[FakeGoogle]:
    async with running_google(tmp_path / "sa.json") as fake:
        yield fake


def stack_config(google: FakeGoogle, key_file: Path, *, attempts: int = 1) -> str:
    return f"""
        [cache]
        enabled = false

        [resilience]
        max_attempts = {attempts}
        backoff_initial_s = 0

        [providers.gemini]
        kind = "gemini"
        base_url = "{google.base_url}/v1beta"
        api_key_env = "GEMINI_API_KEY"

        [providers.vertex]
        kind = "vertex"
        base_url = "{google.base_url}/v1"
        region = "europe-west4"
        credentials_file = "{key_file}"

        [models.flash]
        deployments = [
          {{ provider = "gemini", model = "gemini-2.5-flash", {PRICES} }},
        ]

        [models.vertex-flash]
        deployments = [
          {{ provider = "vertex", model = "gemini-2.5-flash", {PRICES} }},
        ]

        [models.claude-on-vertex]
        deployments = [
          {{ provider = "vertex", model = "claude-sonnet-4@20250514", {PRICES} }},
        ]

        [models.failing-over]
        strategy = "failover"
        deployments = [
          {{ name = "studio", provider = "gemini", model = "gemini-2.5-pro", priority = 0 }},
          {{ name = "on-vertex", provider = "vertex", model = "gemini-2.5-pro", priority = 1 }},
        ]
    """


@pytest.fixture
async def stack(
    nats_url: str, google: FakeGoogle, tmp_path: Path, make_stack: StackFactory
) -> Stack:
    config = config_from(stack_config(google, tmp_path / "sa.json"))
    return await make_stack(
        nats_url, config, bridge=True, environ={"GEMINI_API_KEY": google.api_key}
    )


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("flash", "/v1beta/models/gemini-2.5-flash:generateContent"),
        (
            "vertex-flash",
            "/v1/projects/proj-1/locations/europe-west4/publishers/google/models/"
            "gemini-2.5-flash:generateContent",
        ),
    ],
)
async def test_a_whole_answer_with_usage_and_cost(
    stack: Stack, google: FakeGoogle, model: str, path: str
) -> None:
    """A chat completion through the bridge is answered by generateContent: system
    instruction, user/model turns and generation settings go up; text, usage and cost come
    back; AI Studio gets its key in a header, Vertex AI a token from the service account."""
    assert stack.http is not None
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Weather?"},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["END"],
    }
    reply = await stack.http.post("/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Hello from Gemini"}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    assert reply.headers["llm-cost-usd"] == f"{(11 * 0.3 + 7 * 2.5) / 1e6:.6f}"
    sent = google.calls[-1]
    assert sent.path == path
    assert sent.body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert [turn["role"] for turn in sent.body["contents"]] == ["user", "model", "user"]
    assert sent.body["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
    }
    if model == "flash":
        assert sent.headers["x-goog-api-key"] == google.api_key
    else:
        assert sent.headers["Authorization"] == "Bearer ya29.token-1"
    assert not google.refused


@pytest.mark.parametrize("model", ["flash", "vertex-flash"])
async def test_a_streamed_answer_through_the_sdk(
    stack: Stack, google: FakeGoogle, model: str
) -> None:
    """The SDK's stream is translated event by event from streamGenerateContent?alt=sse and
    ends with the usage Gemini reported."""
    google.script.append(GeminiAnswer(text="Sunny and mild today"))
    client = openai_sdk(stack)
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert streamed_text(chunks) == "Sunny and mild today"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 4
    assert finish_reasons(chunks)[-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 18
    assert google.calls[-1].path.endswith(":streamGenerateContent")
    assert google.calls[-1].query == "alt=sse"


async def test_tools_both_ways_keep_the_thought_signature(stack: Stack, google: FakeGoogle) -> None:
    """Tools go up as function declarations (JSON Schema as it is) with the tool choice; a
    function call comes back as a tool call; sent back with its result, the call carries
    Gemini's thought signature again and the result names its function."""
    google.script.append(
        GeminiAnswer(
            text="",
            calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "signature": SIGNATURE}],
        )
    )
    client = openai_sdk(stack)
    tool_choice = {"type": "function", "function": {"name": "get_weather"}}
    message, call = await call_for_the_tool(client, "flash", tool_choice)
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    sent = google.calls[-1].body
    declaration = sent["tools"][0]["functionDeclarations"][0]
    assert declaration["parametersJsonSchema"] == WEATHER_TOOL["function"]["parameters"]  # type: ignore[index]
    assert sent["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }

    second = await answer_the_call(client, "flash", message)
    assert second.choices[0].message.content == "Hello from Gemini"
    model_turn, result_turn = google.calls[-1].body["contents"][1:]
    assert model_turn["role"] == "model"
    assert model_turn["parts"] == [
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
            "thoughtSignature": SIGNATURE,
        }
    ]
    assert result_turn == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 12}}}],
    }


async def test_a_streamed_function_call(stack: Stack, google: FakeGoogle) -> None:
    """A function call in a stream arrives as one tool-call delta and the stream finishes
    with ``tool_calls``."""
    google.script.append(
        GeminiAnswer(text="Checking", calls=[{"name": "get_weather", "args": {"city": "Oslo"}}])
    )
    body = {
        "model": "vertex-flash",
        "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "tools": [WEATHER_TOOL],
        "stream": True,
    }
    chunks = [c async for c in stream_chat(stack.nc, body, deadline_s=10)]
    calls = tool_call_deltas(chunks)
    assert len(calls) == 1
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}
    assert calls[0]["id"].startswith("call_")
    assert finish_reasons(chunks)[-1] == "tool_calls"


async def test_images_and_json_schema(stack: Stack, google: FakeGoogle) -> None:
    """An image goes up as inline data and a JSON-schema response format as Gemini's
    response MIME type and JSON schema."""
    assert stack.http is not None
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}}
    body = {
        "model": "flash",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What colour?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                ],
            }
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "colour", "schema": schema, "strict": True},
        },
    }
    reply = await stack.http.post("/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    sent = google.calls[-1].body
    assert sent["contents"][0]["parts"] == [
        {"text": "What colour?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}},
    ]
    assert sent["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


async def test_the_messages_api_reaches_gemini(stack: Stack, google: FakeGoogle) -> None:
    """The Anthropic SDK's Messages API is served by Gemini through the messages-to-chat
    path, whole and streamed."""
    client = anthropic_sdk(stack)
    message = await client.messages.create(
        model="flash",
        max_tokens=32,
        system="Be terse.",
        messages=[{"role": "user", "content": "Hi"}],
    )
    assert message.content[0].text == "Hello from Gemini"  # type: ignore[union-attr]
    assert message.usage.input_tokens == 11
    assert google.calls[-1].body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    google.script.append(GeminiAnswer(text="Streamed over Gemini"))
    async with client.messages.stream(
        model="vertex-flash", max_tokens=32, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
    assert text == "Streamed over Gemini"


@pytest.mark.parametrize(
    ("status", "name", "caller_status", "code"),
    [
        (400, "INVALID_ARGUMENT", 400, "bad_request"),
        (403, "PERMISSION_DENIED", 502, "authentication"),
        (429, "RESOURCE_EXHAUSTED", 429, "rate_limited"),
        (500, "INTERNAL", 502, "unavailable"),
        (503, "UNAVAILABLE", 502, "unavailable"),
    ],
)
async def test_google_errors_reach_the_caller(
    stack: Stack,
    google: FakeGoogle,
    status: int,
    name: str,
    caller_status: int,
    code: str,
) -> None:
    """Google's errors arrive as envelopes with Google's message; a quota error keeps the
    wait Google asked for (RetryInfo); the key never travels back."""
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
    google.script.append(
        GeminiAnswer(
            status=status,
            error=google_error(
                status, name, f"upstream said no ({google.api_key})", details=[retry]
            ),
        )
    )
    answered, reply, body = await chat_over_nats(stack, "flash")
    assert answered == caller_status
    error = error_of(body)
    assert error["code"] == code
    assert "upstream said no" in error["message"]
    assert google.api_key not in body.decode()
    if status == 429:
        assert reply[headers.RETRY_AFTER] == "37"
        assert reply[headers.RETRYABLE] == "1"


async def test_a_failing_studio_fails_over_to_vertex(
    nats_url: str, google: FakeGoogle, tmp_path: Path, make_stack: StackFactory
) -> None:
    """A 503 from AI Studio is retryable: the same model on Vertex AI answers instead."""
    config = config_from(stack_config(google, tmp_path / "sa.json", attempts=2))
    stack = await make_stack(nats_url, config, environ={"GEMINI_API_KEY": google.api_key})
    google.script.append(
        GeminiAnswer(status=503, error=google_error(503, "UNAVAILABLE", "overloaded"))
    )
    status, reply, _ = await chat_over_nats(stack, "failing-over")
    assert status == 200
    assert reply[headers.DEPLOYMENT] == "on-vertex"
    assert [c.path.split("/")[1] for c in google.calls] == ["v1beta", "v1"]


async def test_a_stream_cut_before_its_finish_ends_in_an_error(
    stack: Stack, google: FakeGoogle
) -> None:
    """A stream that closes before Gemini's finishReason is not a complete answer: the caller
    gets an error event after the chunks, never a clean end."""
    google.script.append(GeminiAnswer(text="one two three", cut=True))
    client = openai_sdk(stack)
    stream = await client.chat.completions.create(
        model="flash", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert await text_until_error(stream) == "one two"


async def test_vertex_tokens_are_reused_refreshed_and_replaced(
    stack: Stack, google: FakeGoogle
) -> None:
    """One token serves many calls; a token past its life is replaced before the call that
    needs it; a token the upstream refuses (401) is dropped and the next call fetches anew."""
    assert stack.http is not None
    body = {"model": "vertex-flash", "messages": [{"role": "user", "content": "x"}]}
    for _ in range(3):
        assert (await stack.http.post("/chat/completions", json=body)).status_code == 200
    assert google.token_requests == 1
    assert {c.headers["Authorization"] for c in google.calls} == {"Bearer ya29.token-1"}

    google.tokens["ya29.token-1"] = 0.0  # Google revokes it: the next call is refused
    refused = await stack.http.post("/chat/completions", json=body)
    assert refused.status_code == 502
    assert refused.json()["error"]["code"] == "authentication"
    assert (await stack.http.post("/chat/completions", json=body)).status_code == 200
    assert google.calls[-1].headers["Authorization"] == "Bearer ya29.token-2"
    assert google.token_requests == 2


async def test_vertex_refreshes_a_token_about_to_expire_in_the_background(
    stack: Stack, google: FakeGoogle
) -> None:
    """A token within the refresh margin still serves calls while its successor is fetched
    (a held token endpoint delays no call); the calls after the fetch use the new token."""
    assert stack.http is not None
    google.token_lifetime_s = 120  # inside the 300 s refresh margin from the start
    body = {"model": "vertex-flash", "messages": [{"role": "user", "content": "x"}]}
    assert (await stack.http.post("/chat/completions", json=body)).status_code == 200
    google.hold_tokens = asyncio.Event()
    for _ in range(3):  # each would time out if it waited for the held refresh
        reply = await stack.http.post("/chat/completions", json=body, timeout=5)
        assert reply.status_code == 200
    assert {c.headers["Authorization"] for c in google.calls} == {"Bearer ya29.token-1"}
    await asyncio.wait_for(google.wait_token_requests(2), timeout=5)
    assert google.token_requests == 2  # one refresh for all the calls that saw it due
    google.token_lifetime_s = 3600
    google.hold_tokens.set()
    for _ in range(50):  # the worker takes the new token as soon as its answer is read
        assert (await stack.http.post("/chat/completions", json=body)).status_code == 200
        if google.calls[-1].headers["Authorization"] == "Bearer ya29.token-2":
            break
    assert google.calls[-1].headers["Authorization"] == "Bearer ya29.token-2"
    assert google.token_requests == 2
    assert not google.refused


async def test_a_refused_service_account_is_an_authentication_error(
    stack: Stack, google: FakeGoogle
) -> None:
    """A token endpoint that refuses the grant fails the call as ``authentication`` naming
    Google's reason, without calling Gemini."""
    assert stack.http is not None
    google.token_failure = (400, {"error": "invalid_grant", "error_description": "account gone"})
    body = {"model": "vertex-flash", "messages": [{"role": "user", "content": "x"}]}
    reply = await stack.http.post("/chat/completions", json=body)
    assert reply.status_code == 502
    error = reply.json()["error"]
    assert error["code"] == "authentication"
    assert "account gone" in error["message"]
    assert not google.calls


async def test_claude_on_vertex_whole_and_streamed(stack: Stack, google: FakeGoogle) -> None:
    """A Claude model on the Vertex AI provider is called through Anthropic's publisher
    (rawPredict / streamRawPredict) with the Messages API's body, the service account's
    token and Vertex AI's anthropic_version; the answers are translated back."""
    client = openai_sdk(stack)
    whole = await client.chat.completions.create(
        model="claude-on-vertex",
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"},
        ],
        max_tokens=50,
    )
    assert whole.choices[0].message.content == "Hello from Gemini"
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == 12
    sent = google.calls[-1]
    assert sent.path == (
        "/v1/projects/proj-1/locations/europe-west4/publishers/anthropic/models/"
        "claude-sonnet-4@20250514:rawPredict"
    )
    assert sent.headers["Authorization"] == "Bearer ya29.token-1"
    assert sent.body == {
        "anthropic_version": "vertex-2023-10-16",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "max_tokens": 50,
        "system": "Be terse.",
    }
    google.script.append(GeminiAnswer(text="Claude streams here"))
    stream = await client.chat.completions.create(
        model="claude-on-vertex",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert streamed_text(chunks) == "Claude streams here"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 15
    assert google.calls[-1].path.endswith(":streamRawPredict")
    assert google.calls[-1].body["stream"] is True
    assert not google.refused
