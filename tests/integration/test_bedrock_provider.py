"""AWS Bedrock (Converse / ConverseStream) behind the broker, end to end: the official SDKs
through the bridge and producers over NATS, a real broker and workers, and a fake Bedrock
that verifies every SigV4 signature with botocore and speaks the binary event stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_client.chat import stream_chat
from schemas import headers
from tests.support.fake_bedrock import BedrockAnswer, FakeBedrock, running_bedrock
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

CLAUDE = "us.anthropic.claude-sonnet-4-20250514-v1:0"  # a cross-region inference profile
NOVA = "amazon.nova-lite-v1:0"
ENV_KEY, ENV_SECRET, ENV_TOKEN = "AKIAENVKEY0000000001", "env/secret+KEY", "FwoGZXIvYXdzEENV"
ENVIRON = {
    "AWS_ACCESS_KEY_ID": ENV_KEY,
    "AWS_SECRET_ACCESS_KEY": ENV_SECRET,
    "AWS_SESSION_TOKEN": ENV_TOKEN,
}


@pytest.fixture
async def bedrock() -> AsyncIterator[FakeBedrock]:
    async with running_bedrock() as fake:
        fake.keys[ENV_KEY] = (ENV_SECRET, ENV_TOKEN)
        yield fake


def stack_config(bedrock: FakeBedrock, extra: str = "", *, region: str = "us-west-2") -> str:
    region_line = f'region = "{region}"' if region else ""
    return f"""
        [cache]
        enabled = false

        [resilience]
        max_attempts = 1

        [providers.bedrock]
        kind = "bedrock"
        base_url = "{bedrock.base_url}"
        {region_line}
        {extra}

        [models.claude]
        deployments = [
          {{ provider = "bedrock", model = "{CLAUDE}", input_price = 3, output_price = 15 }},
        ]

        [models.nova]
        deployments = [{{ provider = "bedrock", model = "{NOVA}" }}]
    """


@pytest.fixture
async def stack(nats_url: str, bedrock: FakeBedrock, make_stack: StackFactory) -> Stack:
    return await make_stack(
        nats_url, config_from(stack_config(bedrock)), bridge=True, environ=ENVIRON
    )


async def test_a_whole_answer_signed_with_usage_and_cost(
    stack: Stack, bedrock: FakeBedrock
) -> None:
    """A chat completion is answered by Converse on a cross-region inference profile: the
    call is SigV4-signed with the environment's keys and session token (verified by botocore
    in the fake); system, turns and inference settings go up; text, usage and cost return."""
    assert stack.http is not None
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Weather?"},
        ],
        "temperature": 0.3,
        "max_completion_tokens": 100,
        "top_p": 0.8,
        "stop": "END",
    }
    reply = await stack.http.post("/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["id"] == "chatcmpl-req-0123"
    assert answer["model"] == CLAUDE
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Hello from Bedrock"}
    assert answer["usage"] == {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
    assert reply.headers["llm-cost-usd"] == f"{(21 * 3 + 9 * 15) / 1e6:.6f}"
    assert not bedrock.refused
    call = bedrock.calls[-1]
    assert (call.model, call.stream, call.access_key) == (CLAUDE, False, ENV_KEY)
    assert call.body == {
        "messages": [
            {"role": "user", "content": [{"text": "Hi"}]},
            {"role": "assistant", "content": [{"text": "Hello."}]},
            {"role": "user", "content": [{"text": "Weather?"}]},
        ],
        "system": [{"text": "Be terse."}],
        "inferenceConfig": {
            "maxTokens": 100,
            "temperature": 0.3,
            "topP": 0.8,
            "stopSequences": ["END"],
        },
    }


async def test_a_streamed_answer_through_the_sdk(stack: Stack, bedrock: FakeBedrock) -> None:
    """ConverseStream's binary event stream, read in 7-byte pieces, arrives as the SDK's
    chunks and ends with the usage of Bedrock's metadata event."""
    bedrock.script.append(BedrockAnswer(text="Sunny and mild today", split=7))
    stream = await openai_sdk(stack).chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "Weather?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert streamed_text(chunks) == "Sunny and mild today"
    assert finish_reasons(chunks)[-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 30
    assert bedrock.calls[-1].stream
    assert not bedrock.refused


async def test_tools_both_ways(stack: Stack, bedrock: FakeBedrock) -> None:
    """Tools go up as tool specs with the tool choice; a toolUse comes back as a tool call;
    the call and its result go up again as toolUse and toolResult blocks."""
    tool_use = {"toolUseId": "tooluse_abc", "name": "get_weather", "input": {"city": "Oslo"}}
    bedrock.script.append(BedrockAnswer(text="", tools=[tool_use], stop_reason="tool_use"))
    client = openai_sdk(stack)
    message, call = await call_for_the_tool(client, "claude", "required")
    assert (call.id, call.function.name) == ("tooluse_abc", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    assert bedrock.calls[-1].body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather by city",
                    "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]},  # type: ignore[index]
                }
            }
        ],
        "toolChoice": {"any": {}},
    }
    second = await answer_the_call(client, "claude", message)
    assert second.choices[0].message.content == "Hello from Bedrock"
    assert bedrock.calls[-1].body["messages"][1:] == [
        {"role": "assistant", "content": [{"toolUse": tool_use}]},
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "tooluse_abc", "content": [{"json": {"temp_c": 12}}]}}
            ],
        },
    ]


async def test_a_streamed_tool_call(stack: Stack, bedrock: FakeBedrock) -> None:
    """A streamed toolUse arrives as a tool-call delta whose argument pieces join into the
    model's input, and the stream finishes with ``tool_calls``."""
    tool_use = {"toolUseId": "tooluse_s", "name": "get_weather", "input": {"city": "Bergen"}}
    bedrock.script.append(BedrockAnswer(text="Checking", tools=[tool_use], stop_reason="tool_use"))
    body = {
        "model": "nova",
        "messages": [{"role": "user", "content": "Weather in Bergen?"}],
        "tools": [WEATHER_TOOL],
        "stream": True,
    }
    chunks = [c async for c in stream_chat(stack.nc, body, deadline_s=10)]
    deltas = tool_call_deltas(chunks)
    assert deltas[0]["id"] == "tooluse_s"
    assert deltas[0]["function"]["name"] == "get_weather"
    arguments = "".join(d["function"].get("arguments", "") for d in deltas)
    assert json.loads(arguments) == {"city": "Bergen"}
    assert finish_reasons(chunks)[-1] == "tool_calls"
    assert bedrock.calls[-1].model == NOVA


async def test_images_go_up_as_bytes_and_web_urls_are_refused(
    stack: Stack, bedrock: FakeBedrock
) -> None:
    """A data-URL image is sent as image bytes; an image by web URL, which Converse cannot
    fetch, is the caller's 400 without a call upstream."""
    assert stack.http is not None

    def with_image(url: str) -> dict[str, object]:
        part = {"type": "image_url", "image_url": {"url": url}}
        content = [{"type": "text", "text": "What is it?"}, part]
        return {"model": "claude", "messages": [{"role": "user", "content": content}]}

    reply = await stack.http.post(
        "/chat/completions", json=with_image("data:image/png;base64,iVBO")
    )
    assert reply.status_code == 200, reply.text
    assert bedrock.calls[-1].body["messages"][0]["content"][1] == {
        "image": {"format": "png", "source": {"bytes": "iVBO"}}
    }
    calls = len(bedrock.calls)
    refused = await stack.http.post("/chat/completions", json=with_image("https://x.test/a.png"))
    assert refused.status_code == 400
    assert "data: URLs" in refused.json()["error"]["message"]
    assert len(bedrock.calls) == calls


@pytest.mark.parametrize(
    ("error_type", "status", "caller_status", "code"),
    [
        ("ThrottlingException", 429, 429, "rate_limited"),
        ("ValidationException", 400, 400, "bad_request"),
        ("AccessDeniedException", 403, 502, "authentication"),
        ("ModelTimeoutException", 408, 504, "timeout"),
        ("InternalServerException", 500, 502, "unavailable"),
        ("ServiceUnavailableException", 503, 502, "unavailable"),
    ],
)
async def test_bedrock_errors_reach_the_caller(
    stack: Stack,
    bedrock: FakeBedrock,
    error_type: str,
    status: int,
    caller_status: int,
    code: str,
) -> None:
    """Bedrock's errors arrive as envelopes naming Bedrock's error; throttling, timeouts and
    service errors are retryable, validation and access errors are not."""
    bedrock.script.append(BedrockAnswer(error_type=error_type, status=status))
    answered, reply, body = await chat_over_nats(stack, "claude")
    assert answered == caller_status
    error = error_of(body)
    assert error["code"] == code
    assert error_type in error["message"]
    retryable = code in {"rate_limited", "timeout", "unavailable"}
    assert (reply.get(headers.RETRYABLE) == "1") is retryable
    assert ENV_SECRET not in body.decode()


@pytest.mark.parametrize("answer", ["exception", "cut"])
async def test_a_broken_stream_ends_in_an_error(
    stack: Stack, bedrock: FakeBedrock, answer: str
) -> None:
    """An exception inside the event stream, or a stream closed before messageStop, ends
    the caller's stream with an error after the chunks it got, never as complete."""
    bedrock.script.append(
        BedrockAnswer(
            text="one two three",
            error_type="modelStreamErrorException" if answer == "exception" else None,
            stream_exception=answer == "exception",
            cut=answer == "cut",
        )
    )
    stream = await openai_sdk(stack).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert await text_until_error(stream) == "one two three"


async def test_the_messages_api_reaches_bedrock(stack: Stack, bedrock: FakeBedrock) -> None:
    """The Anthropic SDK's Messages API is served by Bedrock through the messages-to-chat
    path, whole and streamed."""
    client = anthropic_sdk(stack)
    message = await client.messages.create(
        model="claude", max_tokens=32, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].text == "Hello from Bedrock"  # type: ignore[union-attr]
    assert message.usage.output_tokens == 9
    bedrock.script.append(BedrockAnswer(text="Streamed over Bedrock"))
    async with client.messages.stream(
        model="claude", max_tokens=32, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
    assert text == "Streamed over Bedrock"


async def test_a_wrong_secret_fails_the_signature(
    nats_url: str, bedrock: FakeBedrock, make_stack: StackFactory
) -> None:
    """A signature made with another secret is refused by the fake's check (so the check
    can fail) and reaches the caller as an authentication error naming AWS's reason."""
    environ = {**ENVIRON, "AWS_SECRET_ACCESS_KEY": "not/the/secret"}
    stack = await make_stack(nats_url, config_from(stack_config(bedrock)), environ=environ)
    status, _, body = await chat_over_nats(stack, "claude")
    assert status == 502
    error = error_of(body)
    assert error["code"] == "authentication"
    assert "InvalidSignatureException" in error["message"]
    assert bedrock.refused == ["InvalidSignatureException: the signature does not match"]


def write_profiles(tmp_path: Path) -> dict[str, str]:
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = AKIADEFAULT000000000\naws_secret_access_key = d\n\n"
        "[edge]\naws_access_key_id = AKIAPROFILE000000000\naws_secret_access_key = p/secret\n"
    )
    config = tmp_path / "config"
    config.write_text(
        "[profile regional]\nregion = us-west-2\n"
        "aws_access_key_id = AKIACONFIG0000000000\naws_secret_access_key = c/secret\n"
    )
    return {"AWS_SHARED_CREDENTIALS_FILE": str(credentials), "AWS_CONFIG_FILE": str(config)}


@pytest.mark.parametrize(
    ("extra", "environ", "region", "access_key"),
    [
        # the provider's profile wins over keys in the environment
        ('profile = "edge"', ENVIRON, "us-west-2", "AKIAPROFILE000000000"),
        # AWS_PROFILE names a profile of the config file, which also gives the region
        ("", {"AWS_PROFILE": "regional"}, "", "AKIACONFIG0000000000"),
    ],
    ids=["credentials-file-profile", "aws-profile-config-file-region"],
)
async def test_credentials_come_from_the_aws_chain(
    nats_url: str,
    bedrock: FakeBedrock,
    make_stack: StackFactory,
    tmp_path: Path,
    extra: str,
    environ: dict[str, str],
    region: str,
    access_key: str,
) -> None:
    """Without keys in the environment, or with a profile named, the shared credentials and
    config files are read as every AWS SDK reads them: profile, keys and region."""
    bedrock.keys["AKIAPROFILE000000000"] = ("p/secret", None)
    bedrock.keys["AKIACONFIG0000000000"] = ("c/secret", None)
    environ = {**environ, **write_profiles(tmp_path)}
    config = config_from(stack_config(bedrock, extra, region=region))
    stack = await make_stack(nats_url, config, environ=environ)
    status, _, body = await chat_over_nats(stack, "nova")
    assert status == 200, body
    assert bedrock.calls[-1].access_key == access_key
    assert "x-amz-security-token" not in bedrock.calls[-1].headers
    assert not bedrock.refused
