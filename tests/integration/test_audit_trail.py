"""The audit trail's writer against a real nats-server: several writers share one intact
chain; a stream deleted behind a writer's back is noted in the trail; a record deleted from a
stream without protection is found by the check; while JetStream is away admin actions are
held (and refused once the bound is reached), and written in order when it is back; the
console checks a long trail a bounded number of records per poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api

from broker.service import BrokerOptions, BrokerService
from edge_bridge.console import audit as console_audit
from edge_runtime.audit import AuditWriter, Entry, audit_stream_config, iso_time
from edge_runtime.embedded import EmbeddedNats, free_ports
from edge_runtime.process import close_quietly, connect
from schemas import audit, headers, subjects
from schemas.audit import Actor, AuditRecord, Origin, encode_record, link_hash
from schemas.jetstream import AUDIT_STREAM, AUDIT_SUBJECT
from tests.support.audit import TrailWatch, audit_command
from tests.support.stack import MOCK_ONLY, StackFactory, config_from

STREAM = audit_stream_config(max_age_s=3600, max_bytes=1 << 20, replicas=1)
PATIENCE_S = 20.0


def entry(n: int, writer: int = 0) -> Entry:
    return Entry(
        time=iso_time(time.time()),
        action=audit.BREAKER_OPEN,
        outcome="ok",
        status=200,
        params={"n": n, "writer": writer},
    )


def writer_on(nc: Client, name: str, max_pending: int = 1000) -> AuditWriter:
    return AuditWriter(
        nc.jetstream(timeout=2.0), STREAM, lambda: name, max_pending=max_pending, clock=time.time
    )


async def test_several_writers_share_one_intact_chain(own_nats: EmbeddedNats) -> None:
    """Three writers (as three brokers) writing 20 records each at once: 60 records, one
    chain that verifies, each writer's records in the order it was given them."""
    connections = [await connect(own_nats.url, f"writer-{i}") for i in range(3)]
    writers = [writer_on(nc, f"w{i}") for i, nc in enumerate(connections)]
    try:
        for writer in writers:
            await writer.open()
            writer.start()
        for n in range(20):
            for i, writer in enumerate(writers):
                writer.submit(entry(n, i))
        for writer in writers:
            assert await writer.flush(PATIENCE_S)
        code, verdict = await audit_command(connections[0], "--verify")
        assert code == 0, verdict
        assert "60 records, seq 1 to 60" in verdict
        code, listing = await audit_command(connections[0], "--json")
        records = [msgspec.json.decode(line) for line in listing.splitlines()]
        for i in range(3):
            mine = [r["params"]["n"] for r in records if r["writer"] == f"w{i}"]
            assert mine == list(range(20))
    finally:
        for writer in writers:
            await writer.stop()
        for nc in connections:
            await close_quietly(nc)


async def test_a_stream_deleted_behind_a_writer_is_noted_in_the_new_one(
    own_nats: EmbeddedNats,
) -> None:
    """The stream deleted after three records: the writer makes it again and its first record
    there says the trail it wrote up to seq 3 is gone."""
    nc = await connect(own_nats.url, "writer")
    writer = writer_on(nc, "w")
    try:
        await writer.open()
        writer.start()
        for n in range(3):
            writer.submit(entry(n))
        assert await writer.flush(PATIENCE_S)
        await nc.jetstream().delete_stream(AUDIT_STREAM)
        writer.submit(entry(3))
        assert await writer.flush(PATIENCE_S)
        code, listing = await audit_command(nc, "--json")
        assert code == 0
        records = [msgspec.json.decode(line) for line in listing.splitlines()]
        assert [r["action"] for r in records] == [audit.CHAIN_RESET, audit.BREAKER_OPEN]
        assert records[0]["params"] == {"written_seq": 3, "stream_last_seq": 0}
        assert (await audit_command(nc, "--verify"))[0] == 0
    finally:
        await writer.stop()
        await close_quietly(nc)


async def test_a_record_deleted_from_an_unprotected_stream_is_found(
    own_nats: EmbeddedNats,
) -> None:
    """A trail in a stream made by hand without delete protection: seq 3 deleted through the
    JetStream API, and the check names it; a broker started on that server then protects the
    stream, and the break stays visible."""
    nc = await connect(own_nats.url, "writer")
    js = nc.jetstream()
    await js.add_stream(api.StreamConfig(name=AUDIT_STREAM, subjects=[AUDIT_SUBJECT]))
    broker: BrokerService | None = None
    try:
        prev = ""
        for seq in range(1, 6):  # the chain a writer makes, in a stream without protection
            record = AuditRecord(
                seq=seq,
                prev_seq=seq - 1,
                prev=prev,
                time=iso_time(time.time()),
                writer="w",
                action=audit.BREAKER_OPEN,
                outcome="ok",
                status=200,
                actor=Actor(),
                origin=Origin(),
            )
            data = encode_record(record)
            await js.publish(AUDIT_SUBJECT, data, stream=AUDIT_STREAM)
            prev = link_hash(data)
        assert (await audit_command(nc, "--verify"))[0] == 0
        assert await js.delete_msg(AUDIT_STREAM, 3)
        code, verdict = await audit_command(nc, "--verify")
        assert code == 1
        assert verdict.splitlines()[0] == (
            "audit trail BROKEN at seq 3: record 3 is missing (deleted)"
        )
        broker = BrokerService(config_from(MOCK_ONLY), BrokerOptions(nats_url=own_nats.url))
        await broker.start()
        config = (await js.stream_info(AUDIT_STREAM)).config
        assert (config.deny_delete, config.deny_purge) == (True, True)
        assert (await audit_command(nc, "--verify"))[0] == 1
    finally:
        if broker is not None:
            await broker.stop(1.0)
        await close_quietly(nc)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server on a fixed port (restarted at that address, with or without JetStream)."""
    server = EmbeddedNats(tmp_path / "js", port=free_ports(1)[0])
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def until_answered(nc: Client) -> None:
    """Until a broker answers its ping through the restarted server."""
    async with asyncio.timeout(PATIENCE_S):
        while True:
            try:
                await nc.request(subjects.BROKER_PING, b"", timeout=0.5)
            except (NoRespondersError, NatsTimeout):
                await asyncio.sleep(0.05)  # the clients are still reconnecting
            else:
                return


async def breaker(nc: Client, action: str) -> tuple[str, dict[str, object]]:
    body = msgspec.json.encode({"action": action, "deployment": "mock@mock"})
    reply = await nc.request(subjects.BREAKER_ADMIN, body, timeout=10)
    return (reply.headers or {})[headers.STATUS], msgspec.json.decode(reply.data)


async def test_admin_actions_wait_for_jetstream_then_are_refused_at_the_bound(
    own_server: EmbeddedNats, make_stack: StackFactory
) -> None:
    """With JetStream gone (the server back without it) a broker still forces breakers, holding
    their records; once it holds audit.max_pending of them it refuses the next action (503
    audit_unavailable, nothing applied); when JetStream is back the held records are written in
    order, the chain verifies, and actions are taken again."""
    config = config_from(MOCK_ONLY + "\n[audit]\nmax_pending = 2\n")
    stack = await make_stack(own_server.url, config)
    watch = await TrailWatch.start(stack.nc)
    await watch.action(audit.CONFIG_LOADED)
    await watch.stop()
    own_server.stop()
    own_server.jetstream = False
    own_server.start()
    await until_answered(stack.nc)

    assert (await breaker(stack.nc, "open"))[0] == "200"
    assert (await breaker(stack.nc, "close"))[0] == "200"
    status, refused = await breaker(stack.nc, "reset")
    assert status == "503"
    assert refused["error"]["code"] == "audit_unavailable"
    state = (await breaker(stack.nc, "status"))[1]
    assert state["breakers"]["mock@mock"]["forced"] is True  # the reset was not applied

    own_server.stop()
    own_server.jetstream = True
    own_server.start()
    await until_answered(stack.nc)
    watch = await TrailWatch.start(stack.nc)
    records = await watch.action(audit.BREAKER_CLOSE)
    actions = [r.action for r in watch.records]
    assert actions == [audit.CONFIG_LOADED, audit.BREAKER_OPEN, audit.BREAKER_CLOSE]
    assert records[0].outcome == "ok"
    assert (await audit_command(stack.nc, "--verify"))[0] == 0
    assert (await breaker(stack.nc, "reset"))[0] == "200"
    await watch.action(audit.BREAKER_RESET)
    await watch.stop()


async def test_the_console_checks_a_long_trail_over_several_polls(
    own_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 5 records checked per poll, a 12-record trail is shown as being checked (seq 5,
    then 10 of 12), then intact; a record added later is checked at the next poll."""
    monkeypatch.setattr(console_audit, "PER_POLL", 5)
    nc = await connect(own_nats.url, "writer")
    writer = writer_on(nc, "w")
    try:
        await writer.open()
        writer.start()
        for n in range(12):
            writer.submit(entry(n))
        assert await writer.flush(PATIENCE_S)
        panel = console_audit.AuditPanel(nc)
        polls = [(await panel.snapshot())["chain"] for _ in range(3)]
        assert [(c["complete"], c["checked_seq"]) for c in polls] == [
            (False, 5),
            (False, 10),
            (True, 12),
        ]
        assert all(c["intact"] and c["last_seq"] == 12 for c in polls)
        writer.submit(entry(12))
        assert await writer.flush(PATIENCE_S)
        latest = await panel.snapshot()
        assert (latest["chain"]["checked_seq"], latest["chain"]["intact"]) == (13, True)
        assert [r["seq"] for r in latest["records"][:2]] == [13, 12]
    finally:
        await writer.stop()
        await close_quietly(nc)
