"""Per-key governance through the real path: a key's model list and its own rate limits and
budget, nested under its tenant's, for static keys in the configuration and run-time keys
minted through ``llm.admin.keys`` into a real Redis, over NATS and the HTTP bridge."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import anthropic
import msgspec
import openai
import pytest
from nats.aio.msg import Msg

from broker.config import Config, ConfigError
from broker.tenancy.tenants import hash_key
from schemas import headers, subjects
from tests.support.servers import RedisServer
from tests.support.stack import Stack, StackFactory, chat, config_from

NARROW, PLAIN, ADMIN = (f"sk-le-test-{n}-{uuid.uuid4().hex}" for n in ("narrow", "plain", "admin"))


@pytest.fixture
async def stack(nats_url: str, own_redis: RedisServer, make_stack: StackFactory) -> Stack:
    """Tenant ``team<random>`` (rpm 3; fresh Redis counters) with key NARROW (models
    ``mock-*``, rpm 2) and key PLAIN (the tenant's limits only), on two brokers, with a Redis
    of the test's own: the run-time keys it mints would make keys required for every later
    test sharing the session's Redis."""
    team = f"team{uuid.uuid4().hex[:8]}"
    config = config_from(f"""
        [cache]
        l2 = "off"
        [batch]
        enabled = true
        [admission]
        max_wait_s = 0  # over a limit, a request is refused at once instead of waiting
        [tenants.{team}]
        rpm = 3
        keys = [
            {{ hash = "{hash_key(NARROW)}", models = ["mock-*"], rpm = 2 }},
            "{hash_key(PLAIN)}",
        ]
        [tenants.ops]
        admin = true
        keys = ["{hash_key(ADMIN)}"]
        [providers.mock]
        kind = "mock"
        [models.mock]
        deployments = [{{ provider = "mock" }}]
        [models.mock-fast]
        aliases = ["quick"]
        deployments = [{{ provider = "mock" }}]
        [models.priced]
        deployments = [{{ provider = "mock", input_price = 100, output_price = 400 }}]
    """)
    return await make_stack(nats_url, config, bridge=True, brokers=2, redis_url=own_redis.url)


async def ask(stack: Stack, key: str, model: str = "mock-fast") -> Msg:
    body = chat(f"grant {uuid.uuid4().hex}", model=model)
    hdrs = {headers.AUTHORIZATION: f"Bearer {key}", headers.CACHE_CONTROL: "no-store"}
    return await stack.nc.request(subjects.CHAT, body, timeout=10, headers=hdrs)


def outcome(msg: Msg) -> tuple[int, str]:
    body = msgspec.json.decode(msg.data)
    return int((msg.headers or {})[headers.STATUS]), body.get("error", {}).get("code", "")


AS_ADMIN = {headers.AUTHORIZATION: f"Bearer {ADMIN}"}


async def admin_keys(stack: Stack, command: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One ``llm.admin.keys`` command, as the console and operators send it (with an admin
    key: brokers with admin keys configured want one on every admin command)."""
    reply = await stack.nc.request(
        subjects.ADMIN_KEYS, msgspec.json.encode(command), timeout=10, headers=AS_ADMIN
    )
    body: dict[str, Any] = msgspec.json.decode(reply.data)
    return int((reply.headers or {})[headers.STATUS]), body


async def reload_everywhere(stack: Stack) -> None:
    """Every broker re-reads the run-time keys (what the console does after a change): one
    ``llm.admin.keys.reload``, waited for until each broker has answered."""
    inbox = stack.nc.new_inbox()
    answered: asyncio.Queue[Msg] = asyncio.Queue()
    sub = await stack.nc.subscribe(inbox, cb=answered.put)
    try:
        await stack.nc.publish(subjects.ADMIN_KEYS_RELOAD, b"", reply=inbox, headers=AS_ADMIN)
        async with asyncio.timeout(10):
            for _ in stack.brokers:
                assert ((await answered.get()).headers or {})[headers.STATUS] == "200"
    finally:
        await sub.unsubscribe()


async def test_a_key_outside_its_model_list_is_a_403_naming_the_model(stack: Stack) -> None:
    """A model the key's list leaves out is a 403 ``model_not_allowed`` in OpenAI's envelope
    over NATS and HTTP (and Anthropic's on /v1/messages); an alias of an allowed model is
    allowed; /v1/models lists only what the key may use."""
    assert outcome(await ask(stack, NARROW, "quick")) == (200, "")
    refused = await ask(stack, NARROW, "mock")
    error = msgspec.json.decode(refused.data)["error"]
    assert (outcome(refused), error["type"], error["param"]) == (
        (403, "model_not_allowed"),
        "permission_error",
        "model",
    )
    assert "`mock`" in error["message"]
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key=NARROW, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await client.chat.completions.create(
            model="priced", messages=[{"role": "user", "content": "not mine"}]
        )
    assert denied.value.code == "model_not_allowed"
    assert sorted([m.id async for m in client.models.list()]) == ["mock-fast", "quick"]
    claude = anthropic.AsyncAnthropic(
        base_url=stack.base_url.removesuffix("/v1"), api_key=NARROW, max_retries=0
    )
    with pytest.raises(anthropic.PermissionDeniedError):
        await claude.messages.create(
            model="mock", max_tokens=10, messages=[{"role": "user", "content": "no"}]
        )
    assert outcome(await ask(stack, PLAIN, "mock")) == (200, "")  # the tenant allows all


async def test_a_keys_rate_limit_nests_under_its_tenants(stack: Stack) -> None:
    """rpm 2 on the key, 3 on the tenant, across two brokers and both entry points: the key's
    third request (over HTTP) is a 429 naming the key's limit; the tenant's other key gets the
    one request left, then the tenant's 429. A refused request is counted in neither."""
    narrow = [await ask(stack, NARROW) for _ in range(2)]
    assert [outcome(r) for r in narrow] == [(200, ""), (200, "")]
    assert stack.http is not None  # the third, over HTTP: the same counters
    refused = await stack.http.post(
        "/chat/completions",
        content=chat("third", model="mock-fast"),
        headers={"Authorization": f"Bearer {NARROW}"},
    )
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "this key's limits" in refused.json()["error"]["message"]
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    plain = [await ask(stack, PLAIN) for _ in range(2)]
    assert [outcome(r) for r in plain] == [(200, ""), (429, "rate_limit_exceeded")]
    assert (plain[1].headers or {})["x-ratelimit-limit-requests"] == "3"
    assert "this key's" not in msgspec.json.decode(plain[1].data)["error"]["message"]


async def test_run_time_keys_carry_and_change_their_grants(stack: Stack) -> None:
    """``llm.admin.keys`` creates a key with its own model list and budget (stored in Redis,
    honoured by both brokers), updates its model list, and refuses limits wider than the
    tenant's; the console's list shows each key with its grant."""
    team = next(t for t in stack.brokers[0].config.tenants if t.startswith("team"))
    status, created = await admin_keys(
        stack,
        {"action": "create", "tenant": team, "models": ["priced"], "budget_usd": 0.0001},
    )
    assert status == 200
    await reload_everywhere(stack)
    key = created["key"]
    assert (created["models"], created["budget_usd"]) == (["priced"], 0.0001)
    for _ in range(2):  # the pair of brokers: each has it
        assert outcome(await ask(stack, key, "mock-fast")) == (403, "model_not_allowed")
    assert outcome(await ask(stack, key, "priced")) == (200, "")  # spends past the budget
    spent = await ask(stack, key, "priced")
    assert outcome(spent) == (402, "budget_exceeded")
    assert "this key's" in msgspec.json.decode(spent.data)["error"]["message"]
    assert outcome(await ask(stack, PLAIN, "priced")) == (200, "")  # the tenant has none

    status, updated = await admin_keys(
        stack, {"action": "update", "hash": created["hash"], "models": ["mock-*"]}
    )
    assert (status, updated["models"]) == (200, ["mock-*"])
    await reload_everywhere(stack)
    assert outcome(await ask(stack, key, "mock-fast")) == (200, "")

    status, wide = await admin_keys(stack, {"action": "create", "tenant": team, "rpm": 50})
    assert status == 400
    assert "rpm (50) is over tenant" in wide["error"]["message"]
    status, listed = await admin_keys(stack, {"action": "list"})
    rows = next(t for t in listed["tenants"] if t["name"] == team)["keys"]
    mine = next(r for r in rows if r["hash"] == created["hash"])
    assert (mine["source"], mine["models"]) == ("run-time", ["mock-*"])
    static = next(r for r in rows if r["hash"] == hash_key(NARROW))
    assert (static["source"], static["models"], static["rpm"]) == ("config", ["mock-*"], 2)


async def test_a_key_with_its_own_governance_cannot_create_batches(stack: Stack) -> None:
    """A batch's lines run as its tenant, so a key with a model list or limits gets a 403
    instead of a batch that would escape them; a plain key of the tenant may."""
    assert stack.http is not None
    line = {"model": "mock", "messages": [{"role": "user", "content": "batched"}]}
    body = {
        "endpoint": "/v1/chat/completions",
        "lines": [
            {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": line}
        ],
    }
    hdrs = {headers.AUTHORIZATION: f"Bearer {NARROW}"}
    reply = await stack.nc.request(
        "llm.batch.submit", msgspec.json.encode(body), timeout=10, headers=hdrs
    )
    assert outcome(reply) == (403, "key_not_allowed")
    hdrs = {headers.AUTHORIZATION: f"Bearer {PLAIN}"}
    reply = await stack.nc.request(
        "llm.batch.submit", msgspec.json.encode(body), timeout=10, headers=hdrs
    )
    assert outcome(reply) == (200, "")


def test_a_static_keys_limit_cannot_be_wider_than_its_tenants() -> None:
    """The configuration refuses a key whose rpm is over its tenant's, naming the key."""
    with pytest.raises(ConfigError, match=r"tenants\.t\.keys\[0\]\.rpm \(9\) is over tenant t"):
        Config.from_toml(f"""
            [tenants.t]
            rpm = 5
            keys = [{{ hash = "{hash_key("sk-le-x")}", rpm = 9 }}]
        """)
