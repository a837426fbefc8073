"""The broker's control plane on FastStream's in-memory test broker."""

from __future__ import annotations

from faststream.nats import NatsBroker, TestNatsBroker

from broker.cache.response import CachedReply, ResponseCache
from broker.cache.settings import CacheSettings
from broker.config import Config
from broker.control import register_control
from broker.upstream.router import Router
from schemas import subjects


async def test_ping_and_purge_in_memory() -> None:
    """Ping answers; purge empties the namespace's L1 entries and refuses a bad command."""
    config = Config.load()
    cache = ResponseCache(CacheSettings(l2="off"))  # type: ignore[arg-type]
    entry = CachedReply(body=b"{}", provider="mock", deployment="d")
    cache.l1.put("default:ns1:aa", entry, 2, 60)
    cache.l1.put("default:ns2:bb", entry, 2, 60)
    fs = NatsBroker(apply_types=False, logger=None)
    register_control(fs, config, cache, Router(config.breaker))
    async with TestNatsBroker(fs) as test_broker:
        ping = await test_broker.request(b"", subjects.BROKER_PING)
        assert (await ping.decode())["status"] == "ok"  # type: ignore[index]
        purged = await (
            await test_broker.request({"namespace": "ns1"}, subjects.CACHE_PURGE)
        ).decode()
        assert purged == {"purged": {"l1": 1}}
        bad = await (await test_broker.request({"nothing": 1}, subjects.CACHE_PURGE)).decode()
        assert bad["error"]["code"] == "invalid_request"  # type: ignore[index]
    assert cache.l1.get("default:ns1:aa") is None
    assert cache.l1.get("default:ns2:bb") == entry
