"""Slow is not lost: an upstream whose first byte comes after 90 s (a reasoning model
thinking) is waited for by every caller with its default options, and called once.

Before keepalives, the bridge sent such a request again after 30 s and the Python client
after 30 s (each resend a paid upstream call), and the broker's 60 s default deadline ended
it with a 504. The four callers run at once, so the module costs one wait of 90 s.
"""

from __future__ import annotations

import asyncio

import openai
import pytest

from edge_client import EdgeClient
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted

#: The upstream's silence before its first byte: longer than every retry layer's per-attempt
#: wait (30 s) and than the old default deadline (60 s).
FIRST_BYTE_S = 90.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(FIRST_BYTE_S + 90)]


@pytest.fixture
async def stack(nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory) -> Stack:
    fake_openai.default = Scripted(delay_s=FIRST_BYTE_S)
    config = config_from(f"""
        [cache]
        enabled = false
        [providers.thinker]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        [models.o3]
        deployments = [{{ provider = "thinker", model = "o3-deep" }}]
    """)
    return await make_stack(nats_url, config, providers=["thinker"], bridge=True)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_a_first_byte_after_90_s_is_one_upstream_call_for_every_caller(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """Whole and streamed, over HTTP (the openai SDK's defaults) and from the Python client
    (its defaults): each answer arrives, and the upstream was called exactly once for each."""
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x")  # default timeout, retries

    async def http_whole() -> str:
        reply = await sdk.chat.completions.create(model="o3", messages=ask("http whole"))
        return reply.choices[0].message.content or ""

    async def http_stream() -> str:
        chunks = await sdk.chat.completions.create(
            model="o3", messages=ask("http stream"), stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])

    async with EdgeClient(stack.nc) as client:

        async def client_whole() -> str:
            reply = await client.chat({"model": "o3", "messages": ask("client whole")})
            return reply.choices[0].message.content or ""

        async def client_stream() -> str:
            async with client.stream({"model": "o3", "messages": ask("client stream")}) as s:
                return "".join([c.choices[0].delta.content or "" async for c in s if c.choices])

        answers = await asyncio.gather(http_whole(), http_stream(), client_whole(), client_stream())

    assert answers == [
        "upstream says hi to o3-deep",
        "upstream streams to o3-deep",
        "upstream says hi to o3-deep",
        "upstream streams to o3-deep",
    ]
    prompts = sorted(r.body["messages"][0]["content"] for r in fake_openai.received)
    assert prompts == ["client stream", "client whole", "http stream", "http whole"]
