"""nats/auth.conf enforced by a real nats-server: producers cannot reach what is not theirs."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from broker.service import BrokerOptions, BrokerService
from edge_bridge import BridgeOptions, BridgeServer
from edge_client import EdgeClient
from edge_runtime.embedded import EmbeddedNats
from schemas import audit
from schemas.jetstream import ONCE_BUCKET
from tests.support.audit import TrailWatch
from tests.support.cli import run_cli
from tests.support.stack import MOCK_ONLY, config_from
from tests.support.violations import CHAT, Violations
from workers import MockProvider, WorkerService

AUTH_CONF = Path(__file__).parents[2] / "nats" / "auth.conf"
TENANT_SUBJECTS = """
    [auth]
    nats_tenant_subjects = true
    [tenants.acme]
"""
PASSWORDS = {
    f"LLM_EDGE_{name}_PASSWORD": f"pw-{name.lower()}"
    for name in (
        "BROKER",
        "WORKER_OPENAI",
        "WORKER_MOCK",
        "BRIDGE",
        "ADMIN",
        "ALICE",
        "BOB",
        "CAROL",
    )
}


@pytest.fixture(scope="module")
def secured_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nats-server started with nats/auth.conf (port and storage overridden for the test)."""
    server = EmbeddedNats(
        tmp_path_factory.mktemp("js-auth"),
        port=-1,
        config_file=AUTH_CONF,
        env={**os.environ, **PASSWORDS},
    )
    try:
        yield server.start().removeprefix("nats://")
    finally:
        server.stop()


def user_url(url: str, user: str) -> str:
    """``nats://user:password@host:port`` for ``user`` (password from PASSWORDS)."""
    password = PASSWORDS[f"LLM_EDGE_{user.upper().replace('-', '_')}_PASSWORD"]
    return f"nats://{user}:{password}@{url}"


async def as_user(url: str, user: str, violations: Violations, **options: object) -> Client:
    """Connect as ``user``."""
    return await nats.connect(user_url(url, user), error_cb=violations.on_error, **options)  # type: ignore[arg-type]


@pytest.fixture
async def services(secured_url: str) -> AsyncIterator[None]:
    config = config_from(MOCK_ONLY + TENANT_SUBJECTS)
    broker = BrokerService(
        config,
        BrokerOptions(
            nats_url=f"nats://broker:{PASSWORDS['LLM_EDGE_BROKER_PASSWORD']}@{secured_url}"
        ),
    )
    await broker.start()
    password = PASSWORDS["LLM_EDGE_WORKER_MOCK_PASSWORD"]
    worker_nc = await nats.connect(
        f"nats://worker-mock:{password}@{secured_url}", inbox_prefix="_INBOX.worker-mock"
    )
    worker = WorkerService(worker_nc, MockProvider())
    await worker.start()
    try:
        yield
    finally:
        await worker.stop(1)
        await worker_nc.close()
        await broker.stop(1)


@pytest.mark.usefixtures("services")
async def test_nats_identity_is_the_tenant(secured_url: str) -> None:
    """Carol's NATS user may publish only under tenant acme's subjects: her requests there are
    acme's (cache entries under acme, no API key), and she cannot reach llm.chat or another
    tenant's subject; Alice cannot publish as acme."""
    violations = Violations()
    carol = await as_user(secured_url, "carol", violations, inbox_prefix="_INBOX.carol")
    alice_violations = Violations()
    alice = await as_user(secured_url, "alice", alice_violations, inbox_prefix="_INBOX.alice")
    try:
        reply = await carol.request("llm.tenant.acme.chat", CHAT, timeout=10)
        assert reply.headers is not None
        assert reply.headers["Llm-Status"] == "200"
        assert reply.headers["X-Cache-Key"].startswith("acme:")
        anthropic = msgspec.json.encode(
            {"model": "mock", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        )
        message = await carol.request("llm.tenant.acme.messages", anthropic, timeout=10)
        assert msgspec.json.decode(message.data)["type"] == "message"
        assert violations.seen == []
        for subject in ("llm.chat", "llm.tenant.globex.chat"):
            await violations.refused(carol, subject)
        await alice_violations.refused(alice, "llm.tenant.acme.chat")
        mine = await alice.request("llm.chat", CHAT, timeout=10)
        assert mine.headers is not None
        assert mine.headers["X-Cache-Key"].startswith("default:")
    finally:
        await carol.close()
        await alice.close()


@pytest.mark.usefixtures("services")
async def test_producer_is_answered_on_its_own_inbox(secured_url: str) -> None:
    """A producer with its own inbox prefix gets its chat completion."""
    violations = Violations()
    alice = await as_user(secured_url, "alice", violations, inbox_prefix="_INBOX.alice")
    try:
        reply = await alice.request("llm.chat", CHAT, timeout=10)
        assert reply.headers is not None
        assert reply.headers["Llm-Status"] == "200"
        assert violations.seen == []
    finally:
        await alice.close()


@pytest.mark.usefixtures("services")
async def test_producer_cannot_reach_provider_subjects(secured_url: str) -> None:
    """Subscribing to llm.provider.> and publishing to a provider subject are refused."""
    violations = Violations()
    alice = await as_user(secured_url, "alice", violations, inbox_prefix="_INBOX.alice")
    try:
        await alice.subscribe("llm.provider.>")
        await violations.wait_for("llm.provider.>")
        await violations.refused(alice, "llm.provider.mock")  # the worker never sees it
    finally:
        await alice.close()


@pytest.mark.usefixtures("services")
async def test_producer_cannot_read_another_producers_replies(secured_url: str) -> None:
    """Bob may not subscribe to Alice's inbox; Alice still gets her replies."""
    bob_violations = Violations()
    bob = await as_user(secured_url, "bob", bob_violations, inbox_prefix="_INBOX.bob")
    alice_violations = Violations()
    alice = await as_user(secured_url, "alice", alice_violations, inbox_prefix="_INBOX.alice")
    try:
        stolen: list[bytes] = []

        async def steal(msg: object) -> None:
            stolen.append(msg.data)  # type: ignore[attr-defined]

        await bob.subscribe("_INBOX.alice.>", cb=steal)
        await bob_violations.wait_for("_INBOX.alice.>")
        reply = await alice.request("llm.chat", CHAT, timeout=10)
        assert reply.data
        await bob.flush()
        assert stolen == []
    finally:
        await alice.close()
        await bob.close()


@pytest.mark.usefixtures("services")
async def test_bridge_answers_with_its_own_inbox_prefix(secured_url: str) -> None:
    """The bridge, connected as user bridge with inbox prefix _INBOX.bridge, is ready and
    answers a chat completion over HTTP (replies reach the only inbox it may read); the admin
    user's discovery finds it, and its status endpoint answers the admin."""
    bridge = BridgeServer(
        BridgeOptions(
            nats_url=user_url(secured_url, "bridge"), port=0, nats_inbox_prefix="_INBOX.bridge"
        )
    )
    await bridge.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bridge.port}") as http:
            assert (await http.get("/ready")).status_code == 200
            body = msgspec.json.decode(CHAT)
            reply = await http.post("/v1/chat/completions", json=body, timeout=10)
            assert reply.status_code == 200, reply.text
            assert reply.json()["object"] == "chat.completion"
            assert (await http.get("/v1/models")).json()["data"]
        violations = Violations()
        admin = await as_user(secured_url, "admin", violations, inbox_prefix="_INBOX.admin")
        try:
            info = await admin.request("$SRV.INFO.llm-edge-bridge", b"", timeout=5)
            assert msgspec.json.decode(info.data)["id"] == bridge.service_id
            status = await admin.request("llm.status.bridge", b"", timeout=5)
            assert msgspec.json.decode(status.data)["requests"] >= 3
            assert violations.seen == []
        finally:
            await admin.close()
    finally:
        await bridge.stop()


@pytest.mark.usefixtures("services")
async def test_discovery_finds_brokers_and_workers(secured_url: str) -> None:
    """The admin user's $SRV.PING is answered by the broker and the mock worker, and each
    answers its llm.status.<role> endpoint."""
    violations = Violations()
    admin = await as_user(secured_url, "admin", violations, inbox_prefix="_INBOX.admin")
    try:
        inbox = admin.new_inbox()
        answered: set[str] = set()
        everyone = asyncio.Event()

        async def on_pong(msg: Msg) -> None:
            answered.add(msgspec.json.decode(msg.data)["name"])
            if {"llm-edge-broker", "llm-edge-worker-mock"} <= answered:
                everyone.set()

        await admin.subscribe(inbox, cb=on_pong)
        await admin.publish("$SRV.PING", b"", reply=inbox)
        async with asyncio.timeout(5):
            await everyone.wait()
        for role in ("broker", "worker-mock"):
            status = await admin.request(f"llm.status.{role}", b"", timeout=5)
            assert "in_flight" in msgspec.json.decode(status.data)
        assert violations.seen == []
    finally:
        await admin.close()


@pytest.mark.usefixtures("services")
@pytest.mark.process
async def test_cli_admin_commands_under_permissions(secured_url: str) -> None:
    """``llm-edge breaker status`` and ``cache purge`` work as user admin with
    NATS_INBOX_PREFIX=_INBOX.admin, and the brokers record the purge in the audit trail, which
    the admin reads and verifies; a producer may not publish admin commands."""
    admin = {"NATS_URL": user_url(secured_url, "admin"), "NATS_INBOX_PREFIX": "_INBOX.admin"}
    out, _ = await run_cli("breaker", "status", env=admin)
    assert json.loads(out)["breakers"]["mock@mock"]["state"] == "closed"
    reader = await as_user(secured_url, "admin", Violations(), inbox_prefix="_INBOX.admin")
    watch = await TrailWatch.start(reader)
    out, _ = await run_cli("cache", "purge", "--all", env=admin)
    assert "purged" in json.loads(out)
    await watch.action(audit.CACHE_PURGE)  # written by the broker, under its permissions
    await reader.close()
    out, _ = await run_cli("audit", "--action", "cache.purge", "--json", env=admin)
    assert json.loads(out.splitlines()[-1])["origin"]["via"] == "cli"
    out, _ = await run_cli("audit", "--verify", env=admin)
    assert out.startswith("audit trail intact: ")
    violations = Violations()
    alice = await as_user(secured_url, "alice", violations, inbox_prefix="_INBOX.alice")
    try:
        await violations.refused(alice, "llm.admin.breaker")
    finally:
        await alice.close()


@pytest.mark.usefixtures("services")
async def test_a_worker_claims_idempotent_calls_with_its_own_permissions(secured_url: str) -> None:
    """Alice's retrying client marks her chat idempotent: the mock worker, under its own NATS
    user, claims it in the llm_edge_once bucket and stores the answer there."""
    violations = Violations()
    alice = await as_user(secured_url, "alice", violations, inbox_prefix="_INBOX.alice")
    broker = await as_user(secured_url, "broker", Violations())
    try:
        kv = await broker.jetstream().key_value(ONCE_BUCKET)
        before = len(await _keys(kv))
        client = EdgeClient(alice)
        reply = await client.chat(
            {"model": "mock", "messages": [{"role": "user", "content": "claimed"}]},
            request_id="perm-once-1",
            cache_control="no-store",
        )
        assert reply.choices[0].message.content
        async with asyncio.timeout(5):  # the answer is stored after the reply
            while len(await _keys(kv)) == before:  # noqa: ASYNC110  (no event for a KV write)
                await asyncio.sleep(0.05)
        streamed = {"model": "mock", "messages": [{"role": "user", "content": "claimed too"}]}
        texts = []
        for _ in range(2):  # the second attempt is answered from the first one's stored stream
            async with client.stream(
                streamed, request_id="perm-once-2", cache_control="no-store"
            ) as chunks:
                texts.append("".join([c.choices[0].delta.content or "" async for c in chunks]))
            async with asyncio.timeout(5):
                while len(await _keys(kv)) < before + 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        assert texts[0]
        assert texts[1] == texts[0]
        stored = [msgspec.msgpack.decode((await kv.get(k)).value or b"") for k in await _keys(kv)]
        assert any(entry.get("messages") for entry in stored)  # the stream, kept for retries
        assert violations.seen == []
    finally:
        await alice.close()
        await broker.close()


async def _keys(kv: KeyValue) -> list[str]:
    try:
        return await kv.keys()
    except NoKeysError:
        return []
