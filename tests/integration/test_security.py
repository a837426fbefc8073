"""Keys and tenants, per-tenant limits across brokers, PII, input limits, hostile input."""

from __future__ import annotations

import asyncio
import uuid

import anthropic
import msgspec
import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.msg import Msg

from broker.cache.l2_redis import KEY_PREFIX
from broker.tenancy.tenants import hash_key
from edge_client.chat import stream_chat
from schemas import headers
from tests.support.cli import run_cli
from tests.support.servers import RedisServer
from tests.support.stack import Stack, StackFactory, config_from

KEY_A, KEY_B, KEY_C, KEY_D, KEY_E, KEY_F = (f"sk-le-test-{n}-{uuid.uuid4().hex}" for n in "abcdef")


@pytest.fixture
async def stack(nats_url: str, redis_server: RedisServer, make_stack: StackFactory) -> Stack:
    limited = f"limited{uuid.uuid4().hex[:8]}"  # fresh Redis counters for this run
    config = config_from(f"""
        [cache]
        l2 = "redis"

        [broker]
        tenant_metrics = true

        [limits]
        max_messages = 4

        [tenants.acme]
        keys = ["{hash_key(KEY_A)}"]

        [tenants.blocker]
        keys = ["{hash_key(KEY_B)}"]
        pii = "block"

        [tenants.redactor]
        keys = ["{hash_key(KEY_C)}"]
        pii = "redact"

        [tenants.restorer]
        keys = ["{hash_key(KEY_F)}"]
        pii = "redact"
        pii_restore = true

        [tenants.{limited}]
        keys = ["{hash_key(KEY_D)}"]
        rpm = 3

        [admission]
        max_wait_s = 0  # over its rpm, a request is refused at once instead of waiting

        [tenants.spender{limited[7:]}]
        keys = ["{hash_key(KEY_E)}"]
        budget_usd = 0.001
        budget_period = "day"

        [providers.mock]
        kind = "mock"

        [models.mock]
        deployments = [{{ provider = "mock" }}]

        [models.priced]
        deployments = [{{ provider = "mock", input_price = 100, output_price = 400 }}]
    """)
    return await make_stack(nats_url, config, bridge=True, brokers=2, redis_url=redis_server.url)


def chat(content: str, messages: int = 1) -> bytes:
    return msgspec.json.encode(
        {"model": "mock", "messages": [{"role": "user", "content": content}] * messages}
    )


async def ask(stack: Stack, body: bytes, key: str | None, **extra: str) -> Msg:
    hdrs = {**extra}
    if key is not None:
        hdrs[headers.AUTHORIZATION] = f"Bearer {key}"
    return await stack.nc.request("llm.chat", body, timeout=10, headers=hdrs or None)


def status(msg: Msg) -> int:
    return int((msg.headers or {})[headers.STATUS])


async def test_tenant_subjects_are_refused_unless_enabled(stack: Stack) -> None:
    """Without auth.nats_tenant_subjects, naming a tenant in the subject proves nothing: 401."""
    reply = await stack.nc.request("llm.tenant.acme.chat", chat("as acme"), timeout=10)
    assert status(reply) == 401
    error = msgspec.json.decode(reply.data)["error"]
    assert "auth.nats_tenant_subjects" in error["message"]


async def test_keys_are_required_everywhere(stack: Stack) -> None:
    """No key or an unknown key is a 401 over NATS and HTTP; a known key is served."""
    assert status(await ask(stack, chat("hi"), None)) == 401
    assert status(await ask(stack, chat("hi"), "sk-le-not-a-key")) == 401
    reply = await ask(stack, chat("hi"), KEY_A)
    assert status(reply) == 200
    assert stack.http is not None
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
    unauth = await stack.http.post("/chat/completions", json=body)
    assert unauth.status_code == 401
    assert unauth.json()["error"]["code"] == "invalid_api_key"
    ok = await stack.http.post(
        "/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY_A}"}
    )
    assert ok.status_code == 200
    assert (await stack.http.get("/models")).status_code == 401
    listed = await stack.http.get("/models", headers={"Authorization": f"Bearer {KEY_A}"})
    assert "mock" in {m["id"] for m in listed.json()["data"]}
    claude = anthropic.AsyncAnthropic(
        base_url=stack.base_url.removesuffix("/v1"), api_key=KEY_A, max_retries=0
    )
    message = await claude.messages.create(
        model="mock", max_tokens=10, messages=[{"role": "user", "content": "x-api-key"}]
    )
    assert message.role == "assistant"
    with pytest.raises(anthropic.AuthenticationError):
        await anthropic.AsyncAnthropic(
            base_url=stack.base_url.removesuffix("/v1"), api_key="wrong", max_retries=0
        ).messages.create(model="mock", max_tokens=10, messages=[{"role": "user", "content": "x"}])


async def test_tenants_never_share_cache_entries(stack: Stack, redis_server: RedisServer) -> None:
    """The same request from another tenant is a miss: entries are namespaced by tenant."""
    body = chat(f"shared question {uuid.uuid4()}")
    first = await ask(stack, body, KEY_A)
    assert (first.headers or {})[headers.CACHE] == "MISS"
    await _stored_in_l2(redis_server, (first.headers or {})[headers.CACHE_KEY])
    again = (await ask(stack, body, KEY_A)).headers[headers.CACHE]  # type: ignore[index]
    assert again.startswith("HIT")  # L1 or L2: two brokers share the queue
    other = await ask(stack, body, KEY_C)
    assert other.headers[headers.CACHE] == "MISS"  # type: ignore[index]


async def _stored_in_l2(redis_server: RedisServer, key: str) -> None:
    """Wait (bounded) until a broker has written an answer to the shared L2: it writes after
    the reply, and the next request may reach the other broker before that."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        async with asyncio.timeout(10):
            while not await client.exists(KEY_PREFIX + key):  # noqa: ASYNC110  (no event)
                await asyncio.sleep(0.01)
    finally:
        await client.aclose()


async def test_rate_limit_is_shared_by_two_brokers(stack: Stack) -> None:
    """rpm = 3 holds across two broker processes (Redis); the 429 carries OpenAI's headers."""
    replies = [await ask(stack, chat(f"limited {i}"), KEY_D) for i in range(8)]
    assert [status(r) for r in replies].count(200) == 3
    refused = next(r for r in replies if status(r) == 429)
    hdrs = refused.headers or {}
    assert hdrs["x-ratelimit-limit-requests"] == "3"
    assert hdrs["x-ratelimit-remaining-requests"] == "0"
    assert 0 < int(hdrs[headers.RETRY_AFTER]) <= 60
    assert msgspec.json.decode(refused.data)["error"]["code"] == "rate_limit_exceeded"


async def ask_and_spy(stack: Stack, body: bytes, key: str) -> tuple[Msg, str]:
    """Ask, and return the reply with what the mock provider's subject carried meanwhile."""
    seen: list[bytes] = []

    async def spy(msg: Msg) -> None:
        seen.append(msg.data)

    sub = await stack.nc.subscribe("llm.provider.mock", cb=spy)
    await stack.nc.flush()
    try:
        reply = await ask(stack, body, key)
    finally:
        await sub.unsubscribe()
    return reply, b"".join(seen).decode()


async def test_pii_block_and_redact(stack: Stack) -> None:
    """block: 400 naming the message; redact: the provider sees placeholders, not the data."""
    blocked = await ask(stack, chat("email me at jane@example.com"), KEY_B)
    assert status(blocked) == 400
    error = msgspec.json.decode(blocked.data)["error"]
    assert (error["code"], error["param"]) == ("pii_detected", "messages[0].content")
    reply, sent = await ask_and_spy(
        stack, chat("card 4111 1111 1111 1111, mail jane@example.com"), KEY_C
    )
    assert status(reply) == 200
    assert "[CREDIT_CARD_1]" in sent
    assert "[EMAIL_1]" in sent
    assert "4111" not in sent
    assert "jane@example.com" not in sent


async def test_pii_restore_gives_each_caller_its_own_values(stack: Stack) -> None:
    """pii_restore: the provider and the cache see placeholders; each caller's reply (whole or
    streamed, fresh or from cache) carries its own values."""
    jane, sent = await ask_and_spy(
        stack, chat("reply to jane@example.com about 4111 1111 1111 1111"), KEY_F
    )
    assert status(jane) == 200
    assert "jane@example.com" not in sent
    answer = msgspec.json.decode(jane.data)["choices"][0]["message"]["content"]
    assert "reply to jane@example.com about 4111 1111 1111 1111" in answer
    assert "[EMAIL_1]" not in answer
    # Another caller, other values, same shape: one cache entry, its own values back.
    john = await ask(stack, chat("reply to john@example.org about 5500 0000 0000 0004"), KEY_F)
    assert (john.headers or {})[headers.CACHE] in {"HIT-L1", "HIT-L2"}  # two brokers
    answer = msgspec.json.decode(john.data)["choices"][0]["message"]["content"]
    assert "reply to john@example.org about 5500 0000 0000 0004" in answer
    chunks = [
        chunk
        async for chunk in stream_chat(
            stack.nc,
            {"model": "mock", "messages": [{"role": "user", "content": "mail ann@example.net"}]},
            request_headers={headers.AUTHORIZATION: f"Bearer {KEY_F}"},
        )
    ]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "mail ann@example.net" in streamed
    assert "[EMAIL_1]" not in streamed


async def test_input_limits_name_the_field(stack: Stack) -> None:
    """Over max_messages is a 400 naming `messages`."""
    reply = await ask(stack, chat("x", messages=5), KEY_A)
    assert status(reply) == 400
    assert msgspec.json.decode(reply.data)["error"]["param"] == "messages"


hostile_json = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=300),
    hostile_json.map(msgspec.json.encode),
    st.fixed_dictionaries(
        {"model": st.one_of(st.just("mock"), st.text(max_size=10)), "messages": hostile_json}
    ).map(msgspec.json.encode),
)
header_values = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, cache_control=header_values, timeout_ms=header_values)
async def test_hostile_input_gets_4xx_and_breaks_nothing(
    stack: Stack, body: bytes, cache_control: str, timeout_ms: str
) -> None:
    """Malformed and hostile bodies and headers get 4xx envelopes over NATS and HTTP;
    no worker dies, no connection resets, valid traffic keeps flowing."""
    hdrs = {
        headers.CACHE_CONTROL: cache_control,
        headers.TIMEOUT_MS: timeout_ms,
        headers.CACHE_NAMESPACE: cache_control[:64] or "x",
    }
    reply = await ask(stack, body, KEY_A, **hdrs)
    assert 400 <= status(reply) < 500 or status(reply) == 200
    assert "error" in msgspec.json.decode(reply.data) or status(reply) == 200
    assert stack.http is not None
    response = await stack.http.post(
        "/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {KEY_A}", "Cache-Control": cache_control},
    )
    assert 400 <= response.status_code < 500 or response.status_code == 200
    assert stack.nc.is_connected
    assert status(await ask(stack, chat("still fine"), KEY_A)) == 200


async def test_http_garbage_routes(stack: Stack) -> None:
    """Unknown routes and methods are 404/405 envelopes."""
    assert stack.http is not None
    assert (await stack.http.get("/chat/completions")).status_code == 405
    response = await stack.http.request("PATCH", "/coffee")
    assert response.status_code == 404
    assert isinstance(response.json()["error"]["message"], str)


@pytest.mark.process
async def test_budget_caps_spend(stack: Stack, redis_server: RedisServer) -> None:
    """Spend is priced from the deployment table; once the budget is spent: 402. The cost is
    counted in llm_edge_cost_usd_total under the tenant's name and in `llm-edge usage`, by
    model and by tier."""
    from prometheus_client import REGISTRY

    tenant = next(name for name in stack.brokers[0].config.tenants if name.startswith("spender"))
    labels = {"provider": "mock", "model": "priced", "tier": "default", "tenant": tenant}
    assert REGISTRY.get_sample_value("llm_edge_cost_usd_total", labels) is None
    body = msgspec.json.encode(
        {
            "model": "priced",
            "messages": [
                {"role": "user", "content": "a question long enough to cost something " * 5}
            ],
        }
    )
    first = await ask(stack, body, KEY_E, **{headers.CACHE_CONTROL: "no-cache"})
    assert status(first) == 200
    cost = float((first.headers or {})[headers.COST])
    counted = REGISTRY.get_sample_value("llm_edge_cost_usd_total", labels)
    assert counted == pytest.approx(cost, abs=1e-6)
    out, _ = await run_cli("usage", "--redis-url", redis_server.url, "--tenant", tenant)
    by_model, by_tier = ([line.split() for line in t.splitlines()[1:]] for t in out.split("\n\n"))
    assert [(row[0], row[2], float(row[3])) for row in by_model if row[2] == "priced"] == [
        (tenant, "priced", pytest.approx(cost, abs=1e-6))
    ]
    # the mock names no tier: its answers are priced at the base rates, counted as default
    assert [(row[0], row[2], float(row[3])) for row in by_tier if row[2] == "default"] == [
        (tenant, "default", pytest.approx(cost, abs=1e-6))
    ]
    second = await ask(stack, body, KEY_E, **{headers.CACHE_CONTROL: "no-cache"})
    assert status(second) == 402
    error = msgspec.json.decode(second.data)["error"]
    assert error["code"] == "budget_exceeded"
    assert int((second.headers or {})[headers.RETRY_AFTER]) > 0
