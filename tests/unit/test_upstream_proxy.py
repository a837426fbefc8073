"""Upstream calls go through the proxy the environment names, resolved once per adapter."""

from __future__ import annotations

import asyncio
import json

import pytest

from schemas import ChatRequest, Message
from workers import ProviderConfig, ProviderRequest, build_provider, http_client
from workers.upstream_http import proxy_for

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "via proxy"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        ("https://api.openai.com/v1", {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128"),
        ("https://api.openai.com/v1", {"https_proxy": "http://p:3128"}, "http://p:3128"),
        ("http://vllm:8000/v1", {"HTTPS_PROXY": "http://p:3128"}, None),
        ("http://vllm:8000/v1", {"ALL_PROXY": "http://p:3128"}, "http://p:3128"),
        (
            "https://api.openai.com/v1",
            {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "localhost,openai.com"},
            None,
        ),
        ("https://api.openai.com/v1", {}, None),
    ],
)
def test_proxy_for_follows_the_proxy_variables(
    url: str, environ: dict[str, str], expected: str | None
) -> None:
    """HTTPS_PROXY / HTTP_PROXY by scheme, ALL_PROXY, NO_PROXY exemptions, any case."""
    assert proxy_for(url, environ) == expected


async def test_openai_adapter_calls_through_the_proxy() -> None:
    """With HTTP_PROXY set, the call reaches the proxy with the upstream's absolute URL."""
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n")[0])
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        body = json.dumps(COMPLETION).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = ProviderConfig.from_mapping(
        "up", {"kind": "openai_compatible", "base_url": "http://upstream.invalid/v1"}
    )
    async with server, http_client() as session:
        provider = build_provider(config, {"HTTP_PROXY": f"http://127.0.0.1:{port}"}, session)
        chat = ChatRequest(model="m", messages=[Message(role="user", content="hi")])
        body = await provider.complete(
            ProviderRequest(
                body=b'{"model":"m","messages":[]}', chat=chat, upstream_model="m", timeout_s=5
            )
        )
    assert json.loads(body)["choices"][0]["message"]["content"] == "via proxy"
    assert seen == [b"POST http://upstream.invalid/v1/chat/completions HTTP/1.1"]
