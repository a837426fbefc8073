"""A background response run at OpenAI is charged once, when its final response (with usage)
is read there: at the prices of the deployment that took the create, in the tenant's spend
(and so its budget), in ``llm_edge_cost_usd_total`` and the token counts, and in what a
retrieve of it says it cost. Reading it again, or its job delivered again, charges nothing.

A background response is admitted when it is accepted, as a foreground request is: a spent
budget is a 402 and a rate limit a 429 at once; its rate limits are counted then (once), and
its tenant's tpm trued up to its usage when it is charged."""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
import nats
import openai
import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from broker.request import Reply
from broker.responses.runner import Job
from broker.responses.states import cancelled, finished, status
from broker.responses.store import ResponseStore
from broker.tenancy.budget import SPEND_PREFIX, period_key
from broker.tenancy.grants import grant_id
from broker.tenancy.limits import window_keys
from broker.tenancy.tenants import hash_key
from schemas import subjects
from schemas.jetstream import RESPONSE_JOBS_STREAM
from schemas.responses import StoredResponse
from tests.support import responses as responses_stack
from tests.support.servers import EmbeddedNats, RedisServer
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI

KEY = f"sk-le-test-bg-charges-{uuid.uuid4().hex}"
#: A key of a tenant whose tpm no request fits in (the estimate of any is over 1 token).
NO_TPM_KEY = f"sk-le-test-bg-no-tpm-{uuid.uuid4().hex}"
#: A key of a tenant with rate limits that every request here fits in.
LIMITED_KEY = f"sk-le-test-bg-limited-{uuid.uuid4().hex}"
#: A key with a budget and a tpm of its own (its tenant has neither).
OWN_BUDGET_KEY = f"sk-le-test-bg-own-budget-{uuid.uuid4().hex}"
#: The fake's final response's tokens (36 input, 87 output).
USAGE_TOKENS = 123
#: The fake's final response: 36 input tokens (none cached), 87 output, served at the flex
#: tier: 1 and 4 USD per 1M tokens (the base rates are 2 and 8).
COST = (36 * 1.0 + 87 * 4.0) / 1e6
#: Under :data:`COST`: the tenant is over its budget once the response is charged.
BUDGET_USD = COST / 2
#: The longest a background response may take to finish here.
FINISH_S = 15.0


openai_upstream = responses_stack.openai_upstream


@pytest.fixture
async def stack(
    own_nats: EmbeddedNats,
    redis_server: RedisServer,
    openai_upstream: FakeOpenAI,
    make_stack: StackFactory,
) -> Stack:
    tenant = f"bgpayer{uuid.uuid4().hex[:8]}"  # fresh spend in the shared Redis
    config = config_from(f"""
        [cache]
        enabled = false
        [batch]
        enabled = false
        [broker]
        tenant_metrics = true
        [responses]
        poll_s = 0.05
        [tenants.{tenant}]
        keys = ["{hash_key(KEY)}"]
        budget_usd = {BUDGET_USD}
        [tenants.{tenant}notpm]
        keys = ["{hash_key(NO_TPM_KEY)}"]
        tpm = 1
        [tenants.{tenant}limited]
        keys = ["{hash_key(LIMITED_KEY)}"]
        rpm = 100
        tpm = 1000000
        [tenants.{tenant}keyed]
        keys = [{{ hash = "{hash_key(OWN_BUDGET_KEY)}", budget_usd = {BUDGET_USD}, tpm = 1000000 }}]
        [providers.oai]
        kind = "openai"
        base_url = "{openai_upstream.base_url}"
        [[models.gpt.deployments]]
        provider = "oai"
        model = "gpt-4.1"
        input_price = 2.0
        output_price = 8.0
        [models.gpt.deployments.tiers.flex]
        input_price = 1.0
        output_price = 4.0
    """)
    return await make_stack(own_nats.url, config, bridge=True, redis_url=redis_server.url)


def _tenant(stack: Stack) -> str:
    return next(iter(stack.brokers[0].config.tenants))


def _cost_metric(tenant: str) -> float:
    labels = {"provider": "oai", "model": "gpt", "tier": "flex", "tenant": tenant}
    return REGISTRY.get_sample_value("llm_edge_cost_usd_total", labels) or 0.0


def _tokens(tenant: str, kind: str) -> float:
    labels = {"provider": "oai", "model": "gpt", "type": kind, "tenant": tenant}
    return REGISTRY.get_sample_value("llm_edge_tokens_total", labels) or 0.0


async def _window_counts(redis_server: RedisServer, scope: str, minutes: range) -> tuple[int, int]:
    """The requests and tokens counted in ``scope``'s rate-limit windows over ``minutes``."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        requests = tokens = 0
        for minute in minutes:
            counted_r, counted_t = await client.mget(window_keys(scope, minute))
            requests += int(counted_r or 0)
            tokens += int(counted_t or 0)
        return requests, tokens
    finally:
        await client.aclose()


async def _spent(redis_server: RedisServer, tenant: str) -> float:
    label, _ = period_key("month", time.time())
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        return float(await client.get(f"{SPEND_PREFIX}{tenant}:{label}") or 0.0)
    finally:
        await client.aclose()


async def _jobs_done(stack: Stack) -> None:
    """Until the work queue is empty: every job acknowledged, after its charge."""
    js = stack.nc.jetstream()
    while (await js.stream_info(RESPONSE_JOBS_STREAM)).state.messages:  # noqa: ASYNC110  (JetStream's state, read)
        await asyncio.sleep(0.02)


async def _completed(client: openai.AsyncOpenAI, response_id: str) -> None:
    while (await client.responses.retrieve(response_id)).status != "completed":  # noqa: ASYNC110  (as a client polls)
        await asyncio.sleep(0.05)


async def test_a_background_response_at_openai_is_charged_once(
    stack: Stack, redis_server: RedisServer, openai_upstream: FakeOpenAI
) -> None:
    openai_upstream.background.service_tier = "flex"
    tenant = _tenant(stack)
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key=KEY, max_retries=0)
    cost_before = _cost_metric(tenant)
    tokens_before = (_tokens(tenant, "prompt"), _tokens(tenant, "completion"))
    created = await client.responses.create(model="gpt", input="take your time", background=True)
    assert created.status == "queued"
    await asyncio.wait_for(_completed(client, created.id), FINISH_S)
    await asyncio.wait_for(_jobs_done(stack), FINISH_S)

    assert await _spent(redis_server, tenant) == pytest.approx(COST)
    assert _cost_metric(tenant) - cost_before == pytest.approx(COST)
    tokens_after = (_tokens(tenant, "prompt"), _tokens(tenant, "completion"))
    assert (tokens_after[0] - tokens_before[0], tokens_after[1] - tokens_before[1]) == (36, 87)
    assert stack.http is not None
    read = await stack.http.get(
        f"/responses/{created.id}", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert read.status_code == 200
    assert read.json()["usage"]["output_tokens"] == 87
    assert read.headers["llm-cost-usd"] == f"{COST:.6f}"
    assert read.headers["llm-service-tier"] == "flex"

    # read again, and its job delivered again (as after a broker died): nothing more
    await client.responses.retrieve(created.id)
    again = msgspec.json.encode(Job(created.id, tenant))
    await stack.nc.jetstream().publish(subjects.RESPONSES_JOB, again)
    await asyncio.wait_for(_jobs_done(stack), FINISH_S)
    assert await _spent(redis_server, tenant) == pytest.approx(COST)
    assert _cost_metric(tenant) - cost_before == pytest.approx(COST)

    # the budget sees it: the tenant is over it now
    with pytest.raises(openai.APIStatusError) as refused:
        await client.responses.create(model="gpt", input="one more")
    assert refused.value.status_code == 402


async def test_only_the_write_that_makes_a_response_final_wins(own_nats: EmbeddedNats) -> None:
    """What the charge is conditioned on: of two runs storing the same final response at
    once (a job delivered twice), one write wins; a response cancelled first stays so, and
    no finishing write wins."""
    nc = await nats.connect(own_nats.url)
    try:
        store = await ResponseStore.open(nc, ttl_s=60, max_bytes=1 << 20, replicas=1)
        running = StoredResponse("acme", b'{"id":"resp_x","status":"in_progress"}')
        final = Reply(200, b'{"id":"resp_up","status":"completed"}')
        await store.put("resp_x", running)
        writes = await asyncio.gather(
            *(store.apply("resp_x", "acme", lambda s: finished(s, "resp_x", final)) for _ in "ab")
        )
        assert sorted(won for _, won in filter(None, writes)) == [False, True]

        await store.put("resp_y", running)
        await store.update("resp_y", "acme", cancelled)
        written = await store.apply("resp_y", "acme", lambda s: finished(s, "resp_y", final))
        assert written is not None
        assert written[1] is False
        assert status(written[0]) == "cancelled"
    finally:
        await nc.close()


async def test_a_background_response_over_budget_is_refused_when_accepted(
    stack: Stack, redis_server: RedisServer, openai_upstream: FakeOpenAI
) -> None:
    """A tenant whose budget is spent gets a 402 for ``background: true`` at once, as for a
    foreground request, and nothing is queued or sent upstream."""
    tenant = _tenant(stack)
    label, _ = period_key("month", time.time())
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await client.incrbyfloat(f"{SPEND_PREFIX}{tenant}:{label}", BUDGET_USD * 2)
    finally:
        await client.aclose()
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        await sdk.responses.create(model="gpt", input="on credit", background=True)
    assert refused.value.status_code == 402
    assert refused.value.body["code"] == "budget_exceeded"  # type: ignore[index]
    assert openai_upstream.received == []
    js = stack.nc.jetstream()
    assert (await js.stream_info(RESPONSE_JOBS_STREAM)).state.messages == 0


async def test_a_background_response_over_the_rate_limit_is_refused_when_accepted(
    stack: Stack, openai_upstream: FakeOpenAI
) -> None:
    """A request its tenant's tpm cannot hold is a 429 for ``background: true`` at once,
    with its ``Retry-After``, not a queued response that fails later."""
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key=NO_TPM_KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        await sdk.responses.create(model="gpt", input="too many tokens", background=True)
    assert refused.value.status_code == 429
    assert refused.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert "retry-after" in refused.value.response.headers
    assert openai_upstream.received == []


async def test_a_background_response_is_counted_once_and_its_tpm_trued_up(
    stack: Stack, redis_server: RedisServer, openai_upstream: FakeOpenAI
) -> None:
    """A background response at OpenAI is one request in its tenant's rpm (counted when it
    was accepted, not again when it ran), and its tenant's tpm ends at the answer's usage
    (the estimate counted when it was accepted, trued up when it was charged)."""
    tenant = f"{_tenant(stack)}limited"
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key=LIMITED_KEY, max_retries=0)
    first_minute = int(time.time() // 60)
    created = await sdk.responses.create(model="gpt", input="count me once", background=True)
    assert created.status == "queued"
    await asyncio.wait_for(_completed(sdk, created.id), FINISH_S)
    await asyncio.wait_for(_jobs_done(stack), FINISH_S)
    minutes = range(first_minute, int(time.time() // 60) + 1)  # (a minute may turn meanwhile)
    assert await _window_counts(redis_server, tenant, minutes) == (1, USAGE_TOKENS)


async def test_a_keys_own_budget_and_tpm_are_charged_for_its_background_response(
    stack: Stack, redis_server: RedisServer, openai_upstream: FakeOpenAI
) -> None:
    """A key with a budget and a tpm of its own: its background response at OpenAI is
    charged to the key's spend as to its tenant's, its tpm ends at the answer's usage, and
    once the key's budget is spent its next request is a 402."""
    openai_upstream.background.service_tier = "flex"
    tenant = f"{_tenant(stack)}keyed"
    key_scope = f"{tenant}/{grant_id(hash_key(OWN_BUDGET_KEY))}"
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key=OWN_BUDGET_KEY, max_retries=0)
    first_minute = int(time.time() // 60)
    created = await sdk.responses.create(model="gpt", input="on the key's account", background=True)
    await asyncio.wait_for(_completed(sdk, created.id), FINISH_S)
    await asyncio.wait_for(_jobs_done(stack), FINISH_S)

    assert await _spent(redis_server, tenant) == pytest.approx(COST)
    assert await _spent(redis_server, key_scope) == pytest.approx(COST)
    minutes = range(first_minute, int(time.time() // 60) + 1)
    assert (await _window_counts(redis_server, key_scope, minutes))[1] == USAGE_TOKENS
    with pytest.raises(openai.APIStatusError) as refused:
        await sdk.responses.create(model="gpt", input="one more on the key")
    assert refused.value.status_code == 402
