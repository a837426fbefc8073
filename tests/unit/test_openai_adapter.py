"""The OpenAI adapter against a scripted upstream on loopback: payload, pass-through, errors."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator

import msgspec
import pytest

from schemas import decode_chat_request
from tests.support.scripted_upstream import (
    Answer,
    Handler,
    Sent,
    closed_port_url,
    scripted_upstream,
)
from tests.support.upstream import openai_completion
from workers import (
    ErrorKind,
    OpenAIProvider,
    ProviderConfig,
    ProviderError,
    ProviderKind,
    http_client,
)
from workers.base import ProviderRequest

KEY = "sk-test-SECRET-123"
CONFIG = ProviderConfig(
    name="openai",
    kind=ProviderKind.OPENAI,
    base_url="https://up.test/v1",
    api_key_env="OPENAI_API_KEY",
    headers={"OpenAI-Organization": "org-1"},
)


def make_request(**extra: object) -> ProviderRequest:
    body = msgspec.json.encode(
        {"model": "alias", "messages": [{"role": "user", "content": "hi"}], **extra}
    )
    return ProviderRequest(
        body=body,
        chat=decode_chat_request(body),
        upstream_model="gpt-4o-mini",
        timeout_s=5,
        request_id="req-1",
    )


@contextlib.asynccontextmanager
async def provider(
    handler: Handler, config: ProviderConfig = CONFIG
) -> AsyncIterator[OpenAIProvider]:
    """The adapter, its base URL pointed at a scripted upstream (the path part kept)."""
    async with scripted_upstream(handler) as base, http_client() as client:
        yield OpenAIProvider(dataclasses.replace(config, base_url=base + "/v1"), client, KEY)


async def test_sends_upstream_model_key_and_unknown_fields() -> None:
    """The upstream gets the deployment's model, our key, config headers and every extra field."""
    seen: list[Sent] = []

    def handler(request: Sent) -> Answer:
        seen.append(request)
        return Answer(200, json=openai_completion("gpt-4o-mini-2024-07-18", "hello"))

    async with provider(handler) as openai:
        body = await openai.complete(make_request(reasoning_effort="low", stream=False))
    assert json.loads(body)["choices"][0]["message"]["content"] == "hello"
    sent = seen[0].json()
    assert seen[0].path_qs == "/v1/chat/completions"
    assert sent["model"] == "gpt-4o-mini"
    assert sent["reasoning_effort"] == "low"
    assert "stream" not in sent
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].headers["openai-organization"] == "org-1"
    assert seen[0].headers["x-client-request-id"] == "req-1"


@pytest.mark.parametrize(
    ("status", "payload", "resp_headers", "kind", "retryable", "retry_after"),
    [
        (
            401,
            {
                "error": {
                    "message": f"Incorrect API key provided: {KEY}.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
            {},
            ErrorKind.AUTHENTICATION,
            False,
            None,
        ),
        (
            400,
            {
                "error": {
                    "message": "Invalid value for 'temperature'.",
                    "type": "invalid_request_error",
                    "param": "temperature",
                    "code": None,
                }
            },
            {},
            ErrorKind.BAD_REQUEST,
            False,
            None,
        ),
        (
            429,
            {
                "error": {
                    "message": "Rate limit reached for gpt-4o-mini on requests per min "
                    "(RPM): Limit 3, Used 3, Requested 1.",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
            {"retry-after": "20"},
            ErrorKind.RATE_LIMITED,
            True,
            20.0,
        ),
        (
            429,
            {
                "error": {
                    "message": "slow down",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
            {"retry-after-ms": "1500"},
            ErrorKind.RATE_LIMITED,
            True,
            1.5,
        ),
        (
            500,
            {
                "error": {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
            {},
            ErrorKind.UNAVAILABLE,
            True,
            None,
        ),
        (
            503,
            {
                "error": {
                    "message": "The engine is currently overloaded.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
            {},
            ErrorKind.UNAVAILABLE,
            True,
            None,
        ),
    ],
    ids=["401", "400", "429-retry-after", "429-retry-after-ms", "500", "503"],
)
async def test_error_mapping(
    status: int,
    payload: dict[str, object],
    resp_headers: dict[str, str],
    kind: ErrorKind,
    retryable: bool,
    retry_after: float | None,
) -> None:
    """Each upstream status maps to its error kind, retryability and Retry-After."""

    def handler(request: Sent) -> Answer:
        return Answer(status, json=payload, headers=resp_headers)

    async with provider(handler) as openai:
        with pytest.raises(ProviderError) as caught:
            await openai.complete(make_request())
    error = caught.value
    assert error.kind is kind
    assert error.retryable is retryable
    assert error.retry_after == retry_after
    assert error.upstream_status == status
    assert KEY not in str(error)  # the upstream echoed our key; it must not reach the caller


async def test_timeout_and_connection_errors_are_retryable() -> None:
    """Transport failures become TIMEOUT / CONNECTION provider errors, both retryable."""

    slow = dataclasses.replace(CONFIG, timeout_s=0.05)
    async with provider(lambda _: Answer(json={}, delay_s=1.0), slow) as openai:
        with pytest.raises(ProviderError) as caught:
            await openai.complete(make_request())
    assert caught.value.kind is ErrorKind.TIMEOUT
    assert caught.value.retryable

    refused = dataclasses.replace(CONFIG, base_url=closed_port_url() + "/v1")
    async with http_client() as client:
        with pytest.raises(ProviderError) as caught:
            await OpenAIProvider(refused, client, KEY).complete(make_request())
    assert caught.value.kind is ErrorKind.CONNECTION
    assert caught.value.retryable


async def test_garbage_response_is_invalid_response() -> None:
    """A 200 that is not a chat.completion is reported, not passed on."""

    def handler(request: Sent) -> Answer:
        return Answer(200, text="<html>proxy error</html>", headers={"content-type": "text/html"})

    async with provider(handler) as openai:
        with pytest.raises(ProviderError) as caught:
            await openai.complete(make_request())
    assert caught.value.kind is ErrorKind.INVALID_RESPONSE


async def test_azure_deployment_url_and_api_key_header() -> None:
    """Azure: the deployment is in the path, api-version in the query, the key in api-key."""
    seen: list[Sent] = []

    def handler(request: Sent) -> Answer:
        seen.append(request)
        return Answer(200, json=openai_completion("gpt-4o", "hi"))

    azure = ProviderConfig(
        name="azure",
        kind=ProviderKind.AZURE,
        base_url="https://contoso.openai.azure.com",
        api_key_env="AZ",
        api_version="2024-10-21",
    )
    async with scripted_upstream(handler) as base, http_client() as client:
        azure = dataclasses.replace(azure, base_url=base)
        await OpenAIProvider(azure, client, KEY).complete(make_request())
    assert seen[0].path_qs == (
        "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
    )
    assert seen[0].headers["api-key"] == KEY
    assert "authorization" not in seen[0].headers


async def test_stream_parses_split_sse_and_asks_for_usage() -> None:
    """Streaming: chunks split at odd byte boundaries parse; include_usage is always requested."""
    events = [
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        },
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "Grüße 🌍"}, "finish_reason": None}],
        },
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        },
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        },
    ]
    raw = (
        b": OPENROUTER PROCESSING\r\n\r\n"
        + b"".join(
            b"data: " + json.dumps(e, ensure_ascii=False).encode() + b"\r\n\r\n" for e in events
        )
        + b"data: [DONE]\r\n\r\n"
    )
    sent: list[dict[str, object]] = []

    def handler(request: Sent) -> Answer:
        sent.append(request.json())
        return Answer(200, pieces=[raw[i : i + 3] for i in range(0, len(raw), 3)])

    async with provider(handler) as openai:
        relayed = [c async for c in openai.stream(make_request(stream=True))]
    assert [json.loads(r.data) for r in relayed] == events  # each event as the upstream sent it
    chunks = [r.chunk for r in relayed]
    assert sent[0]["stream"] is True
    assert sent[0]["stream_options"] == {"include_usage": True}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Grüße 🌍"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 7


async def test_stream_http_error_before_first_chunk() -> None:
    """A 429 on a streaming call raises the same mapped error as a whole call."""

    def handler(request: Sent) -> Answer:
        return Answer(
            429,
            headers={"retry-after": "4"},
            json={"error": {"message": "slow down", "type": "requests"}},
        )

    async with provider(handler) as openai:
        with pytest.raises(ProviderError) as caught:
            async for _ in openai.stream(make_request(stream=True)):
                pass
    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert caught.value.retry_after == 4.0


def embeddings_request(**fields: object) -> ProviderRequest:
    body = msgspec.json.encode({"model": "alias", "input": ["a", "b"], **fields})
    return ProviderRequest(body=body, upstream_model="text-embedding-3-small", timeout_s=5)


async def test_embed_posts_to_embeddings_with_the_upstream_model() -> None:
    """embed: POST /embeddings (Azure: the deployment's /embeddings) with the deployment's
    model and every field the caller sent; the answer comes back byte for byte."""
    seen: list[Sent] = []
    vectors = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": "AAAAAA=="},
            {"object": "embedding", "index": 1, "embedding": "AACAPw=="},
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }

    def handler(request: Sent) -> Answer:
        seen.append(request)
        return Answer(200, json=vectors)

    async with provider(handler) as openai:
        body = await openai.embed(embeddings_request(encoding_format="base64", input_type="q"))
    assert json.loads(body) == vectors
    assert seen[0].path_qs == "/v1/embeddings"
    assert seen[0].json() == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "base64",
        "input_type": "q",
    }
    azure = ProviderConfig(name="azure", kind=ProviderKind.AZURE, base_url="https://x")
    async with provider(handler, azure) as on_azure:
        await on_azure.embed(embeddings_request())
    assert seen[1].path_qs == (
        "/v1/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
    )


@pytest.mark.parametrize(
    "answer",
    [
        {"object": "list", "data": [{"index": 0, "embedding": [0.1]}], "model": "m"},
        {"object": "list", "data": [{"index": 0, "embedding": 5}, {"index": 1, "embedding": 5}]},
        {"id": "chatcmpl-1", "object": "chat.completion"},
    ],
    ids=["one-vector-for-two-inputs", "numbers", "a-completion"],
)
async def test_embed_refuses_an_answer_without_a_vector_per_input(answer: object) -> None:
    """A 200 that is not one vector per input sent is an invalid_response (retryable: another
    deployment may answer)."""
    async with provider(lambda _: Answer(200, json=answer)) as openai:
        with pytest.raises(ProviderError) as caught:
            await openai.embed(embeddings_request())
    assert caught.value.kind is ErrorKind.INVALID_RESPONSE
    assert caught.value.retryable
