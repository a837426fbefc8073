"""The OpenAI adapter against httpx.MockTransport: payload, pass-through and error mapping."""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest

from schemas import decode_chat_request
from tests.support.upstream import openai_completion
from workers import ErrorKind, OpenAIProvider, ProviderConfig, ProviderError, ProviderKind
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


def provider(handler: object) -> OpenAIProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))  # type: ignore[arg-type]
    return OpenAIProvider(CONFIG, client, KEY)


async def test_sends_upstream_model_key_and_unknown_fields() -> None:
    """The upstream gets the deployment's model, our key, config headers and every extra field."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=openai_completion("gpt-4o-mini-2024-07-18", "hello"))

    body = await provider(handler).complete(make_request(reasoning_effort="low", stream=False))
    assert json.loads(body)["choices"][0]["message"]["content"] == "hello"
    sent = json.loads(seen[0].content)
    assert str(seen[0].url) == "https://up.test/v1/chat/completions"
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

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=payload, headers=resp_headers)

    with pytest.raises(ProviderError) as caught:
        await provider(handler).complete(make_request())
    error = caught.value
    assert error.kind is kind
    assert error.retryable is retryable
    assert error.retry_after == retry_after
    assert error.upstream_status == status
    assert KEY not in str(error)  # the upstream echoed our key; it must not reach the caller


async def test_timeout_and_connection_errors_are_retryable() -> None:
    """Transport failures become TIMEOUT / CONNECTION provider errors, both retryable."""

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    for handler, kind in ((timeout, ErrorKind.TIMEOUT), (refused, ErrorKind.CONNECTION)):
        with pytest.raises(ProviderError) as caught:
            await provider(handler).complete(make_request())
        assert caught.value.kind is kind
        assert caught.value.retryable


async def test_garbage_response_is_invalid_response() -> None:
    """A 200 that is not a chat.completion is reported, not passed on."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>proxy error</html>")

    with pytest.raises(ProviderError) as caught:
        await provider(handler).complete(make_request())
    assert caught.value.kind is ErrorKind.INVALID_RESPONSE
