"""The broker's control plane on FastStream's in-memory test broker."""

from __future__ import annotations

from faststream.nats import NatsBroker, TestNatsBroker

from broker.cache.response import CachedReply, ResponseCache
from broker.cache.settings import CacheSettings
from broker.config import Config
from broker.control import register_control
from broker.tenancy.tenants import KeyRing, hash_key
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
    register_control(fs, config, cache, Router(config.breaker), keys=KeyRing(config.tenants))
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


async def test_breaker_and_purge_want_an_admin_key_once_one_is_configured() -> None:
    """With a console key configured, a purge or breaker override without a key is a 401
    envelope, with a tenant's ordinary key a 403, and with the admin key it runs."""
    admin_key, team_key = "sk-le-control-admin-0000000000", "sk-le-control-team-00000000000"
    config = Config.from_toml(
        f'[console]\nkeys = ["{hash_key(admin_key)}"]\n'
        f'[tenants.team]\nkeys = ["{hash_key(team_key)}"]\n',
        "control.toml",
    )
    cache = ResponseCache(CacheSettings(l2="off"))  # type: ignore[arg-type]
    entry = CachedReply(body=b"{}", provider="mock", deployment="d")
    cache.l1.put("default:ns1:aa", entry, 2, 60)
    keys = KeyRing(config.tenants, console_keys=config.console.keys)
    fs = NatsBroker(apply_types=False, logger=None)
    register_control(fs, config, cache, Router(config.breaker), keys=keys)
    async with TestNatsBroker(fs) as test_broker:
        for subject, command in (
            (subjects.CACHE_PURGE, {"all": True}),
            (subjects.BREAKER_ADMIN, {"action": "status"}),
        ):
            for auth, status, code in (
                (None, "401", "unauthorized"),
                (team_key, "403", "forbidden"),
            ):
                hdrs = {"Authorization": f"Bearer {auth}"} if auth else None
                reply = await test_broker.request(command, subject, headers=hdrs)
                assert reply.headers["Llm-Status"] == status
                assert (await reply.decode())["error"]["code"] == code  # type: ignore[index]
        assert cache.l1.get("default:ns1:aa") == entry  # nothing was purged
        admin = {"Authorization": f"Bearer {admin_key}"}
        purged = await test_broker.request({"all": True}, subjects.CACHE_PURGE, headers=admin)
        assert purged.headers["Llm-Status"] == "200"
    assert cache.l1.get("default:ns1:aa") is None
