"""NATS is closed wherever we ship it: each shipped nats-server configuration, run by a real
nats-server, refuses anonymous connections, lets its users in, and keeps admin subjects to
the admin; brokers with admin keys refuse admin commands without one, whoever publishes them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError

from broker.service import BrokerOptions, BrokerService
from broker.tenancy.tenants import hash_key
from edge_runtime.embedded import EmbeddedNats
from schemas import headers, subjects
from tests.support.cli import run_cli
from tests.support.shipped_nats import PASSWORDS, SHIPPED, shipped_config
from tests.support.stack import MOCK_ONLY, config_from
from tests.support.violations import Violations

#: The admin subjects a producer must never reach, with a command for each.
ADMIN_COMMANDS = {
    subjects.ADMIN_KEYS: {"action": "create", "tenant": "team"},
    subjects.BREAKER_ADMIN: {"action": "open", "deployment": "mock@mock"},
    subjects.CACHE_PURGE: {"all": True},
    subjects.ADMIN_BATCH_CANCEL: {"id": "batch_x"},
}
#: Identities of each configuration that produce requests but are no admins.
PRODUCERS = {
    "auth.conf": ("bridge", "alice", "bob", "carol"),
    "compose": ("bridge",),
    "kubernetes": ("bridge",),
    "cluster.conf": ("bridge",),
}
ADMIN_KEY = "sk-le-closed-admin-key-00000000000000000000000"
TEAM_KEY = "sk-le-closed-team-key-000000000000000000000000"


@pytest.fixture(params=SHIPPED, scope="module")
def shipped(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(configuration name, host:port) of a nats-server running that configuration."""
    name = request.param
    config = shipped_config(name, tmp_path_factory.mktemp(f"conf-{name}"))
    server = EmbeddedNats(
        tmp_path_factory.mktemp(f"js-{name}"),
        port=-1,
        config_file=config.path,
        env={**os.environ, **config.env},
    )
    try:
        yield name, server.start().removeprefix("nats://")
    finally:
        server.stop()


async def as_user(address: str, user: str, violations: Violations) -> Client:
    return await nats.connect(
        f"nats://{user}:{PASSWORDS[user]}@{address}",
        inbox_prefix=f"_INBOX.{user}",
        error_cb=violations.on_error,
        allow_reconnect=False,
    )


async def test_anonymous_connections_are_refused(shipped: tuple[str, str]) -> None:
    """No user, or a wrong password: the server refuses the connection."""
    _, address = shipped
    for url in (f"nats://{address}", f"nats://admin:wrong@{address}"):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0)


async def test_configured_users_connect(shipped: tuple[str, str]) -> None:
    """The broker, the bridge and the admin connect with their passwords and may publish
    what their roles do: the admin an admin command (no broker runs: no responders)."""
    _, address = shipped
    violations = Violations()
    for user in ("broker", "bridge", "worker-mock"):
        client = await as_user(address, user, violations)
        await client.flush()
        await client.close()
    admin = await as_user(address, "admin", violations)
    try:
        with pytest.raises(NoRespondersError):
            await admin.request(subjects.BREAKER_ADMIN, b"{}", timeout=5)
    finally:
        await admin.close()
    assert violations.seen == []


async def test_producers_cannot_reach_admin_subjects(shipped: tuple[str, str]) -> None:
    """Minting keys, forcing breakers, purging caches and cancelling others' batches are
    refused by the server to every identity that is not the admin."""
    name, address = shipped
    for user in PRODUCERS[name]:
        violations = Violations()
        client = await as_user(address, user, violations)
        try:
            for subject in ADMIN_COMMANDS:
                await violations.refused(client, subject)
        finally:
            await client.close()


@pytest.fixture
async def guarded_broker(tmp_path: Path) -> AsyncIterator[str]:
    """A broker with an admin key configured, on a server running nats/auth.conf; yields
    the server's host:port."""
    config = shipped_config("auth.conf", tmp_path / "conf")
    server = EmbeddedNats(
        tmp_path / "js", port=-1, config_file=config.path, env={**os.environ, **config.env}
    )
    address = server.start().removeprefix("nats://")
    broker = BrokerService(
        config_from(
            MOCK_ONLY
            + f"""
            [console]
            keys = ["{hash_key(ADMIN_KEY)}"]
            [tenants.team]
            keys = ["{hash_key(TEAM_KEY)}"]
            """
        ),
        BrokerOptions(nats_url=f"nats://broker:{PASSWORDS['broker']}@{address}"),
    )
    await broker.start()
    try:
        yield address
    finally:
        await broker.stop(1)
        server.stop()


async def test_brokers_want_an_admin_key_even_from_the_admin_identity(guarded_broker: str) -> None:
    """The admin NATS user may publish admin commands, but with admin keys configured each
    one without a key is a 401 envelope, with a tenant's key a 403, and runs with the admin
    key; llm.admin.authorize still answers whoever asks."""
    violations = Violations()
    admin = await as_user(guarded_broker, "admin", violations)
    try:
        for subject, command in ADMIN_COMMANDS.items():
            for key, status, code in (
                (None, "401", "unauthorized"),
                (TEAM_KEY, "403", "forbidden"),
            ):
                auth = {headers.AUTHORIZATION: f"Bearer {key}"} if key else None
                reply = await admin.request(
                    subject, msgspec.json.encode(command), timeout=5, headers=auth
                )
                assert reply.headers is not None
                assert reply.headers[headers.STATUS] == status, (subject, reply.data)
                error = msgspec.json.decode(reply.data)["error"]
                assert error["code"] == code
                assert set(error) >= {"type", "code", "message"}
        verdict = await admin.request(subjects.ADMIN_AUTHORIZE, b"", timeout=5)
        assert msgspec.json.decode(verdict.data) == {"admin": False, "keys": True}
        admin_auth = {headers.AUTHORIZATION: f"Bearer {ADMIN_KEY}"}
        status = await admin.request(
            subjects.BREAKER_ADMIN, b'{"action": "status"}', timeout=5, headers=admin_auth
        )
        assert status.headers is not None
        assert status.headers[headers.STATUS] == "200"
        assert msgspec.json.decode(status.data)["breakers"]["mock@mock"]["forced"] is False
        assert violations.seen == []
    finally:
        await admin.close()


@pytest.mark.process
async def test_cli_sends_the_admin_key_from_the_environment(guarded_broker: str) -> None:
    """``llm-edge breaker`` as the admin NATS user is refused (non-zero exit, the 401
    envelope) without LLM_EDGE_ADMIN_KEY and runs with it."""
    env = {
        "NATS_URL": f"nats://admin:{PASSWORDS['admin']}@{guarded_broker}",
        "NATS_INBOX_PREFIX": "_INBOX.admin",
        "LLM_EDGE_ADMIN_KEY": "",
    }
    with pytest.raises(AssertionError, match="401 unauthorized"):
        await run_cli("breaker", "open", "mock@mock", env=env)
    out, _ = await run_cli(
        "breaker", "open", "mock@mock", env={**env, "LLM_EDGE_ADMIN_KEY": ADMIN_KEY}
    )
    breaker = msgspec.json.decode(out)["breakers"]["mock@mock"]
    assert (breaker["state"], breaker["forced"]) == ("open", True)
