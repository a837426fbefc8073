"""A hung Redis (SIGSTOP) costs a limited tenant's requests one timeout, not one per call."""

from __future__ import annotations

import uuid

import msgspec

from broker.tenancy.tenants import hash_key
from tests.support.servers import RedisServer
from tests.support.stack import StackFactory, config_from

KEY = f"sk-le-test-hung-{uuid.uuid4().hex}"


async def test_hung_redis_is_skipped_by_limits_and_budget(
    nats_url: str, own_redis: RedisServer, make_stack: StackFactory
) -> None:
    """While Redis hangs, a tenant with a budget and an rpm limit is still answered; the first
    Redis call that times out opens the skip window for the limiter and the ledger alike, so
    the requests after it make no Redis attempt at all (before: two timed-out calls each)."""
    server = own_redis
    config = config_from(f"""
        [cache]
        l2 = "off"
        [batch]
        enabled = false
        [providers.mock]
        kind = "mock"
        [models.mock]
        deployments = [{{ provider = "mock", input_price = 1.0, output_price = 1.0 }}]
        [tenants.hung]
        keys = ["{hash_key(KEY)}"]
        rpm = 100
        budget_usd = 100
    """)
    stack = await make_stack(nats_url, config, redis_url=server.url)
    try:
        guard = stack.brokers[0].redis_guard

        async def ask(i: int) -> str:
            body = {"model": "mock", "messages": [{"role": "user", "content": f"hung {i}"}]}
            reply = await stack.nc.request(
                "llm.chat",
                msgspec.json.encode(body),
                timeout=10,
                headers={"Authorization": f"Bearer {KEY}"},
            )
            return (reply.headers or {}).get("Llm-Status", "")

        assert await ask(0) == "200"
        assert guard.available
        server.pause()
        before = guard.attempts
        statuses = [await ask(i) for i in range(1, 6)]
        assert statuses == ["200"] * 5  # counted in process meanwhile
        assert guard.attempts - before == 1  # the first call timed out; the rest were skipped
        assert not guard.available
    finally:
        server.resume()  # before the broker stops: it closes its Redis connections
