"""Keys kept in Redis fail closed: a broker that starts while Redis is down refuses requests
(503 with Retry-After) instead of serving them without a key, until it has read the keys."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from broker import service
from broker.tenancy.tenants import hash_key
from schemas import headers, subjects
from tests.support.servers import RedisServer, free_port
from tests.support.stack import MOCK_ONLY, Stack, StackFactory, config_from

CONFIG_KEY = "sk-le-config-tenant-key-000000000000000000"
CHAT = msgspec.json.encode({"model": "mock", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(autouse=True)
def quick_key_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker re-reads the keys every 0.2 s instead of every 5 s: the tests wait for the
    first read after Redis comes up, whatever its period."""
    monkeypatch.setattr(service, "KEY_REFRESH_S", 0.2)


async def ask(stack: Stack, key: str | None = None) -> tuple[str, dict[str, str]]:
    hdrs = {headers.AUTHORIZATION: f"Bearer {key}"} if key else None
    msg = await stack.nc.request(subjects.CHAT, CHAT, timeout=10, headers=hdrs)
    reply_headers = dict(msg.headers or {})
    code = msgspec.json.decode(msg.data).get("error", {}).get("code", "")
    return reply_headers[headers.STATUS] + (f" {code}" if code else ""), reply_headers


async def test_a_broker_that_cannot_read_its_keys_refuses_until_it_can(
    nats_url: str, make_stack: StackFactory
) -> None:
    """Redis down at start: a request without a key, or with a key the configuration does
    not know, is 503 keys_unavailable (Retry-After), while a configured key is served; once
    Redis answers (holding no run-time keys), the keyless request is served too."""
    port = free_port()
    config = config_from(
        MOCK_ONLY
        + f"""
        [tenants.configured]
        keys = ["{hash_key(CONFIG_KEY)}"]
        """
    )
    stack = await make_stack(nats_url, config, redis_url=f"redis://127.0.0.1:{port}/0")
    status, reply_headers = await ask(stack)
    assert status == "503 keys_unavailable"
    assert reply_headers[headers.RETRY_AFTER] == "5"
    assert (await ask(stack, "sk-le-a-key-only-redis-would-know-0000000"))[0] == (
        "503 keys_unavailable"
    )
    assert (await ask(stack, CONFIG_KEY))[0] == "200"
    redis = RedisServer(port=port)
    redis.start()
    try:
        async with asyncio.timeout(20):  # the broker reads the keys again every 0.2 s
            while (await ask(stack))[0] == "503 keys_unavailable":  # noqa: ASYNC110  (its own timer)
                await asyncio.sleep(0.2)
        # read: keys are required (the configuration has one), a keyless call is a 401 now
        assert (await ask(stack))[0] == "401 invalid_api_key"
    finally:
        redis.stop()


async def test_a_keyless_broker_without_redis_keys_opens_once_it_has_read_them(
    nats_url: str, make_stack: StackFactory
) -> None:
    """No keys in the configuration, Redis down: refused (not open); Redis up with no
    run-time keys: open, as configured."""
    port = free_port()
    config = config_from(MOCK_ONLY)
    stack = await make_stack(nats_url, config, redis_url=f"redis://127.0.0.1:{port}/0")
    assert (await ask(stack))[0] == "503 keys_unavailable"
    redis = RedisServer(port=port)
    redis.start()
    try:
        async with asyncio.timeout(20):
            while (await ask(stack))[0] == "503 keys_unavailable":  # noqa: ASYNC110  (its own timer)
                await asyncio.sleep(0.2)
        assert (await ask(stack))[0] == "200"
    finally:
        redis.stop()
