"""Cache purges over NATS (llm.admin.cache.purge): names follow the request path's rule, and
L1 and L2 always purge the same entries."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from schemas import headers
from schemas.jetstream import CACHE_BUCKET
from tests.support.stack import Stack, StackFactory, config_from

CONFIG = """
    [cache]
    l2 = "nats"
    [batch]
    enabled = false
    [providers.mock]
    kind = "mock"
    [models.mock]
    deployments = [{ provider = "mock" }]
"""


@pytest.fixture
async def stack(nats_url: str, make_stack: StackFactory) -> Stack:
    return await make_stack(nats_url, config_from(CONFIG))


async def ask(stack: Stack, namespace: str) -> tuple[str, str]:
    """(X-Cache, X-Cache-Key) of one request in ``namespace``."""
    body = msgspec.json.encode({"model": "mock", "messages": [{"role": "user", "content": "hi"}]})
    reply = await stack.nc.request(
        "llm.chat", body, timeout=10, headers={headers.CACHE_NAMESPACE: namespace}
    )
    hdrs = reply.headers or {}
    assert hdrs[headers.STATUS] == "200"
    return hdrs[headers.CACHE], hdrs[headers.CACHE_KEY]


async def in_l2(kv: KeyValue, key: str) -> bool:
    try:
        await kv.get(key.replace(":", "."))
    except KeyNotFoundError:
        return False
    return True


async def stored_in_l2(kv: KeyValue, key: str) -> None:
    """Wait (bounded) until the entry written after the reply is in the bucket."""
    watcher = await kv.watch(key.replace(":", "."))
    try:
        async with asyncio.timeout(5):
            async for entry in watcher:
                if entry is not None and entry.value:
                    return
    finally:
        await watcher.stop()


async def purge(stack: Stack, command: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    reply = await stack.nc.request("llm.admin.cache.purge", msgspec.json.encode(command), timeout=5)
    return int((reply.headers or {})[headers.STATUS]), msgspec.json.decode(reply.data)


@pytest.mark.parametrize(
    "command",
    [
        {"namespace": "*"},
        {"namespace": ">"},
        {"namespace": "a.b"},
        {"namespace": "ns\n"},
        {"namespace": "ns", "tenant": "*"},
        {"key": "default:*:*"},
        {"key": "default:ns"},
    ],
    ids=["star", "gt", "dot", "newline", "tenant-star", "key-wildcards", "key-short"],
)
async def test_purge_refuses_names_the_request_path_refuses(
    stack: Stack, namespace: str, command: dict[str, Any]
) -> None:
    """A purge naming a wildcard or otherwise invalid name is a 400 envelope with Llm-Status,
    and neither tier loses an entry."""
    kv = await stack.nc.jetstream().key_value(CACHE_BUCKET)
    cached = {}
    for ns in (f"{namespace}a", f"{namespace}b"):
        assert (await ask(stack, ns))[0] == "MISS"
        cached[ns] = (await ask(stack, ns))[1]
        await stored_in_l2(kv, cached[ns])
    status, body = await purge(stack, command)
    assert status == 400
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["param"] in {"namespace", "tenant", "key"}
    for ns, key in cached.items():
        assert await in_l2(kv, key)
        assert (await ask(stack, ns))[0] == "HIT-L1"


async def test_namespace_purge_empties_both_tiers_and_nothing_else(
    stack: Stack, namespace: str
) -> None:
    """Purging one namespace removes its L1 and L2 entries; the other namespace keeps both."""
    kv = await stack.nc.jetstream().key_value(CACHE_BUCKET)
    gone, kept = f"{namespace}a", f"{namespace}b"
    keys = {}
    for ns in (gone, kept):
        keys[ns] = (await ask(stack, ns))[1]
        await stored_in_l2(kv, keys[ns])
    status, body = await purge(stack, {"namespace": gone})
    assert status == 200
    assert body["purged"]["l1"] == 1
    assert not await in_l2(kv, keys[gone])
    assert (await ask(stack, gone))[0] == "MISS"  # an L2 leftover would be HIT-L2
    assert await in_l2(kv, keys[kept])
    assert (await ask(stack, kept))[0] == "HIT-L1"


async def test_every_admin_reply_carries_llm_status(stack: Stack) -> None:
    """Admin replies carry Llm-Status like every other reply: 200, or 400 with an envelope."""
    ping = await stack.nc.request("llm.broker.ping", b"", timeout=5)
    assert (ping.headers or {})[headers.STATUS] == "200"
    status, _ = await purge(stack, {"nothing": True})
    assert status == 400
    breaker = await stack.nc.request(
        "llm.admin.breaker", b'{"action": "open", "deployment": "nope"}', timeout=5
    )
    assert (breaker.headers or {})[headers.STATUS] == "400"
    assert msgspec.json.decode(breaker.data)["error"]["param"] == "deployment"
    ok = await stack.nc.request("llm.admin.breaker", b"{}", timeout=5)
    assert (ok.headers or {})[headers.STATUS] == "200"
