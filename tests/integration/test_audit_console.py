"""The audit trail of console sessions, against real servers (nats-server with JetStream,
redis-server, two brokers, a worker, the bridge): each admin action and a refused sign-in
recorded in order with who and from where; the chain verified, and a forged record found; the
retention settings on the stream; the ``llm-edge audit`` command as a process."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import msgspec
import pytest
from nats.js.errors import Error as JsError

from broker.service import BrokerOptions, BrokerService
from broker.tenancy.tenants import hash_key
from schemas import audit
from schemas.audit import AuditRecord, encode_record
from schemas.jetstream import AUDIT_STREAM, AUDIT_SUBJECT
from tests.support.audit import TrailWatch, audit_command
from tests.support.browser import CHROMEDRIVER, CHROMIUM, chromium
from tests.support.cli import run_cli, run_cli_status
from tests.support.servers import EmbeddedNats, RedisServer
from tests.support.stack import Stack, StackFactory, config_from

ADMIN_KEY = "sk-le-audit-admin-key-for-tests-00000000000000"
TEAM_KEY = "sk-le-audit-team-key-for-tests-000000000000000"
CONFIG = f"""
    [cache]
    l2 = "redis"
    [batch]
    enabled = false
    [audit]
    max_age_days = 30
    max_bytes = 8388608
    [providers.primary]
    kind = "mock"
    [providers.backup]
    kind = "mock"
    [models.mock]
    strategy = "failover"
    deployments = [
        {{ provider = "primary", priority = 0 }},
        {{ provider = "backup", priority = 1 }},
    ]
    [tenants.ops]
    keys = ["{hash_key(ADMIN_KEY)}"]
    admin = true
    [tenants.team]
    keys = ["{hash_key(TEAM_KEY)}"]
    budget_usd = 10
"""
#: The actions of one console session, in order (reloads and broker starts left out).
SESSION = [
    audit.KEY_CREATE,
    audit.KEY_REVOKE,
    audit.BREAKER_OPEN,
    audit.BREAKER_OPEN,
    audit.CACHE_PURGE,
    audit.CACHE_PURGE,
    audit.CONSOLE_REFUSED,
]


@pytest.fixture
async def stack(own_nats: EmbeddedNats, own_redis: RedisServer, make_stack: StackFactory) -> Stack:
    """Two brokers on a NATS server of the test's own: its trail holds only this test's."""
    return await make_stack(
        own_nats.url, config_from(CONFIG), redis_url=own_redis.url, brokers=2, bridge=True
    )


def console(stack: Stack) -> httpx.AsyncClient:
    assert stack.bridge is not None
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{stack.bridge.port}/console/api", timeout=10
    )


async def command(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A console command as the page sends it, with the admin key."""
    reply = await http.post(
        path,
        json=body,
        headers={"X-Llm-Console": "1", "Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


async def console_session(stack: Stack, watch: TrailWatch) -> str:
    """Create a key, revoke it, force a breaker open, purge a namespace, be refused with a
    tenant's key; each step recorded before the next. Returns the key created."""
    async with console(stack) as http:
        created = await command(http, "/keys", {"tenant": "team"})
        await watch.action(audit.KEY_CREATE)
        await command(http, "/keys/revoke", {"hash": created["hash"]})
        await watch.action(audit.KEY_REVOKE)
        await command(http, "/breaker", {"action": "open", "deployment": "mock@primary"})
        await watch.action(audit.BREAKER_OPEN, 2)  # both brokers applied it
        await command(http, "/purge", {"namespace": "ns", "tenant": "team"})
        await watch.action(audit.CACHE_PURGE, 2)
        refused = await http.get("/state", headers={"Authorization": f"Bearer {TEAM_KEY}"})
        assert refused.status_code == 403
        await watch.action(audit.CONSOLE_REFUSED)
    key: str = created["key"]
    return key


def session_of(records: list[AuditRecord]) -> list[AuditRecord]:
    left_out = {audit.CONFIG_LOADED, audit.KEYS_RELOAD}
    return [r for r in records if r.action not in left_out]


async def test_a_console_session_is_recorded_in_order_with_its_actors(stack: Stack) -> None:
    """Every action of the session is in the trail, in order, with the admin's key hash,
    tenant and address, and its parameters; the refused sign-in names the tenant's key; the
    key created appears only by its hash; the brokers' starts and key reloads are there too."""
    watch = await TrailWatch.start(stack.nc)
    new_key = await console_session(stack, watch)
    code, listing = await audit_command(stack.nc, "--json")
    assert code == 0
    records = [
        msgspec.json.decode(line.encode(), type=AuditRecord) for line in listing.splitlines()
    ]
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert [r.action for r in records].count(audit.CONFIG_LOADED) == 2  # one per broker
    assert [r.action for r in records].count(audit.KEYS_RELOAD) == 4  # create, revoke x 2 brokers
    session = session_of(records)
    assert [r.action for r in session] == SESSION

    create, revoke, *breakers = session[:4]
    assert create.params == {"tenant": "team", "hash": hash_key(new_key)}
    assert revoke.params == {"hash": hash_key(new_key)}
    assert {b.params["deployment"] for b in breakers} == {"mock@primary"}
    assert len({b.writer for b in breakers}) == 2  # each broker recorded its own
    purges = session[4:6]
    assert {json.dumps(p.params, sort_keys=True) for p in purges} == {
        '{"namespace": "ns", "tenant": "team"}'
    }
    for record in session[:6]:
        assert (record.actor.key, record.actor.tenant, record.actor.role) == (
            hash_key(ADMIN_KEY),
            "ops",
            "admin",
        )
        assert (record.origin.via, record.origin.peer) == ("console", "127.0.0.1")
        assert "cid" in record.origin.client
        assert (record.outcome, record.status) == ("ok", 200)
    refused = session[6]
    assert (refused.actor.key, refused.actor.tenant, refused.actor.role) == (
        hash_key(TEAM_KEY),
        "team",
        "tenant",
    )
    assert (refused.outcome, refused.status) == ("refused", 403)
    assert refused.params == {"reason": "forbidden", "method": "GET", "path": "/console/api/state"}
    loaded = next(r for r in records if r.action == audit.CONFIG_LOADED)
    assert loaded.params["tenants"]["team"]["budget_usd"] == 10
    assert new_key not in listing
    assert ADMIN_KEY not in listing
    assert TEAM_KEY not in listing


async def test_the_chain_verifies_and_a_forged_record_is_found(stack: Stack) -> None:
    """After a session `llm-edge audit --verify` passes; JetStream refuses to delete a record;
    a record forged onto the trail (the key's creation, edited to another tenant) fails the
    check at the forgery's own sequence, and the console's panel says the chain is broken."""
    watch = await TrailWatch.start(stack.nc)
    await console_session(stack, watch)
    code, verdict = await audit_command(stack.nc, "--verify")
    assert code == 0, verdict
    assert verdict.startswith("audit trail intact: ")

    js = stack.nc.jetstream()
    create = (await watch.action(audit.KEY_CREATE))[0]
    with pytest.raises(JsError):  # deny_delete: the server itself refuses
        await js.delete_msg(AUDIT_STREAM, create.seq)
    with pytest.raises(JsError):  # deny_purge
        await js.purge_stream(AUDIT_STREAM)
    assert (await audit_command(stack.nc, "--verify"))[0] == 0

    forged = msgspec.structs.replace(create, params={**create.params, "tenant": "ops"})
    ack = await js.publish(AUDIT_SUBJECT, encode_record(forged), stream=AUDIT_STREAM)
    code, verdict = await audit_command(stack.nc, "--verify")
    assert code == 1
    assert verdict.splitlines()[0] == (
        f"audit trail BROKEN at seq {ack.seq}: the record says it was written at seq "
        f"{create.seq}: a copy or a forgery"
    )
    async with console(stack) as http:
        panel = (await http.get("/audit", headers={"Authorization": f"Bearer {ADMIN_KEY}"})).json()
    assert panel["chain"]["intact"] is False
    assert panel["chain"]["break"].startswith(f"seq {ack.seq}: ")
    assert panel["records"][0]["seq"] == ack.seq  # newest first


async def test_the_stream_has_the_configured_retention_and_replicas(
    stack: Stack, own_nats: EmbeddedNats
) -> None:
    """[audit] max_age_days and max_bytes and [nats] replicas are the stream's; deletes and
    purges are denied; a broker started with a new retention changes it in place."""
    js = stack.nc.jetstream()
    config = (await js.stream_info(AUDIT_STREAM)).config
    assert (config.max_age, config.max_bytes, config.num_replicas) == (30 * 86400, 8388608, 1)
    assert (config.deny_delete, config.deny_purge, config.subjects) == (True, True, [AUDIT_SUBJECT])
    longer = config_from(
        CONFIG.replace("max_age_days = 30", "max_age_days = 90").replace('"redis"', '"off"')
    )
    broker = BrokerService(longer, BrokerOptions(nats_url=own_nats.url))
    try:
        await broker.start()
        assert (await js.stream_info(AUDIT_STREAM)).config.max_age == 90 * 86400
    finally:
        await broker.stop(1.0)


@pytest.mark.process
async def test_the_audit_command_lists_filters_and_verifies(
    stack: Stack, own_nats: EmbeddedNats
) -> None:
    """`llm-edge audit` as a process: the session's key actions by the ops tenant, filtered;
    `--verify` exits 0, and 1 naming the forged record once one is on the trail."""
    watch = await TrailWatch.start(stack.nc)
    await console_session(stack, watch)
    nats = ("--nats-url", own_nats.url)
    out, _ = await run_cli("audit", "--action", "key", "--actor", "ops", *nats)
    lines = out.splitlines()
    assert [line.split()[2] for line in lines] == [audit.KEY_CREATE, audit.KEY_REVOKE]
    assert all(" ok " in line and "console 127.0.0.1" in line for line in lines)
    out, _ = await run_cli("audit", "--action", "console.refused", "--since", "10m", *nats)
    assert "team" in out
    assert "forbidden" in out
    out, _ = await run_cli("audit", "--limit", "1", *nats)
    assert len(out.splitlines()) == 1
    assert audit.CONSOLE_REFUSED in out
    out, _ = await run_cli("audit", "--verify", *nats)
    assert out.startswith("audit trail intact: ")

    js = stack.nc.jetstream()
    last = (await watch.action(audit.CONSOLE_REFUSED))[0]
    ack = await js.publish(AUDIT_SUBJECT, encode_record(last), stream=AUDIT_STREAM)
    code, out, _ = await run_cli_status("audit", "--verify", *nats)
    assert code == 1
    assert out.startswith(f"audit trail BROKEN at seq {ack.seq}: ")


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
)
@pytest.mark.browser
async def test_the_console_shows_the_trail_and_its_verification(stack: Stack) -> None:
    """The page's audit panel lists the session's records, newest first, with who did them,
    and says the chain is intact."""
    from tests.integration.test_console import Page  # the console test's page driver

    watch = await TrailWatch.start(stack.nc)
    await console_session(stack, watch)
    assert stack.bridge is not None
    with chromium() as driver:
        page = Page(driver, f"http://127.0.0.1:{stack.bridge.port}/console")
        await asyncio.to_thread(page.sign_in, ADMIN_KEY)
        status = await asyncio.to_thread(
            page.attributes, "#audit-chain", "data-intact", lambda v: v == ["yes"]
        )
        assert status == ["yes"]
        text = await asyncio.to_thread(page.texts, "#audit-chain", lambda t: "intact" in t[0])
        assert text[0].startswith("chain intact: ")
        actions = await asyncio.to_thread(
            page.attributes,
            "#audit-body tr",
            "data-action",
            lambda a: audit.CONSOLE_REFUSED in a,
        )
        assert actions[0] == audit.CONSOLE_REFUSED  # newest first
        assert audit.KEY_CREATE in actions
        create = f'#audit-body tr[data-action="{audit.KEY_CREATE}"] td.actor'
        who = await asyncio.to_thread(page.texts, create)
        assert who == [f"ops {hash_key(ADMIN_KEY).removeprefix('sha256:')[:12]}"]


async def test_an_open_console_records_the_loopback_caller_and_refuses_others(
    own_nats: EmbeddedNats, make_stack: StackFactory
) -> None:
    """Without keys the console's commands are recorded as anonymous from 127.0.0.1; a
    command from a foreign origin is refused and recorded with its reason."""
    config = config_from(
        """
        [cache]
        l2 = "off"
        [batch]
        enabled = false
        [providers.mock]
        kind = "mock"
        [models.mock]
        deployments = [{ provider = "mock" }]
        """
    )
    stack = await make_stack(own_nats.url, config, bridge=True)
    watch = await TrailWatch.start(stack.nc)
    async with console(stack) as http:
        opened = await http.post(
            "/breaker",
            json={"action": "open", "deployment": "mock@mock"},
            headers={"X-Llm-Console": "1"},
        )
        assert opened.status_code == 200
        foreign = await http.post(
            "/breaker",
            json={"action": "close", "deployment": "mock@mock"},
            headers={"X-Llm-Console": "1", "Origin": "http://evil.example"},
        )
        assert foreign.status_code == 403
    [opened_record] = await watch.action(audit.BREAKER_OPEN)
    [refused] = await watch.action(audit.CONSOLE_REFUSED)
    assert (opened_record.actor.role, opened_record.origin.peer) == ("anonymous", "127.0.0.1")
    assert refused.params["reason"] == "cross_origin"
    assert refused.params["method"] == "POST"
    assert not [r for r in watch.records if r.action == audit.BREAKER_CLOSE]
    await watch.stop()
