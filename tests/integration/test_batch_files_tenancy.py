"""Batch files and events reach only their tenant: files are read through the brokers'
``llm.batch.file.*`` API (another tenant's file is a 404), events go to
``llm.batch.events.<tenant>.<id>`` (another tenant's are a permissions violation under
nats/auth.conf), and a file of any size comes back whole, piece by piece."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import nats
import openai
import pytest
from nats.aio.msg import Msg

from broker.service import BrokerOptions, BrokerService
from broker.tenancy.tenants import hash_key
from edge_bridge import BridgeOptions, BridgeServer
from edge_client import EdgeClient, NotFoundError
from schemas import headers, subjects
from schemas.batch import BatchStatus
from tests.integration.test_big_answers import big_text
from tests.integration.test_nats_permissions import (
    AUTH_CONF,
    PASSWORDS,
    Violations,
    as_user,
    user_url,
)
from tests.support.batch import lines
from tests.support.servers import EmbeddedNats
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted, openai_completion
from workers import WorkerService, build_provider, http_client

KEY_ACME, KEY_GLOBEX = (f"sk-le-test-{n}-{uuid.uuid4().hex}" for n in ("acme", "globex"))
TENANTS = f"""
    [batch]
    poll_s = 0.1
    [tenants.acme]
    keys = ["{hash_key(KEY_ACME)}"]
    [tenants.globex]
    keys = ["{hash_key(KEY_GLOBEX)}"]
"""
#: Every wait of these tests is bounded by this (seconds).
WAIT_S = 30.0
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def secured_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nats-server with nats/auth.conf (64 MiB messages), JetStream in a temp directory."""
    server = EmbeddedNats(
        tmp_path_factory.mktemp("js-files"),
        port=-1,
        config_file=AUTH_CONF,
        env={**os.environ, **PASSWORDS},
    )
    try:
        yield server.start().removeprefix("nats://")
    finally:
        server.stop()


@pytest.fixture
async def services(secured_url: str, fake_openai: FakeOpenAI) -> AsyncIterator[None]:
    """A broker with acme's and globex's keys and the batch engine, as user broker; an
    OpenAI-shaped worker (user worker-openai) whose upstream answers every line with a
    multi-MiB completion."""
    config = config_from(f"""
        [cache]
        enabled = false
        [providers.openai]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        [models.big]
        deployments = [{{ provider = "openai", model = "gpt-4o-mini" }}]
        {TENANTS}
    """)
    broker = BrokerService(config, BrokerOptions(nats_url=user_url(secured_url, "broker")))
    await broker.start()
    worker_nc = await nats.connect(
        user_url(secured_url, "worker-openai"), inbox_prefix="_INBOX.worker-openai"
    )
    session = http_client()
    worker = WorkerService(worker_nc, build_provider(config.providers["openai"], {}, session))
    await worker.start()
    try:
        yield
    finally:
        await worker.stop(1)
        await worker_nc.close()
        await session.close()
        await broker.stop(1)


def big_lines(count: int, prompt_bytes: int) -> list[dict[str, Any]]:
    """``count`` request lines for model ``big``, each with a prompt of ``prompt_bytes``."""
    rows = lines(count, model="big")
    for i, row in enumerate(rows):
        row["body"]["messages"][0]["content"] = f"{i}" + "p" * prompt_bytes
    return rows


class Events:
    """Every message a subscription receives, and a wait for one that satisfies a test."""

    def __init__(self) -> None:
        self.seen: list[Msg] = []
        self._changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        self.seen.append(msg)
        self._changed.set()

    async def until_status(self, batch_id: str, status: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while not any(
                msgspec.json.decode(m.data)["id"] == batch_id
                and msgspec.json.decode(m.data)["status"] == status
                for m in self.seen
            ):
                self._changed.clear()
                await self._changed.wait()


@pytest.mark.usefixtures("services")
async def test_a_tenant_reads_its_own_big_results_and_nothing_of_another(
    secured_url: str, fake_openai: FakeOpenAI
) -> None:
    """Bob (acme) submits a batch of 2 MiB prompts answered with 3 MiB completions and reads
    his results through the brokers with the Python client (no JetStream permission): every
    answer whole; his events arrive on llm.batch.events.acme.<id>. Alice (globex) gets 404 for
    his batch and his files, as for a file that does not exist, and subscribing to acme's
    events is a permissions violation that delivers her nothing."""
    answer = big_text(3 * MIB)
    fake_openai.default = Scripted(body=openai_completion("gpt-4o-mini", answer))
    bob_violations, alice_violations = Violations(), Violations()
    bob_nc = await as_user(secured_url, "bob", bob_violations, inbox_prefix="_INBOX.bob")
    alice_nc = await as_user(secured_url, "alice", alice_violations, inbox_prefix="_INBOX.alice")
    try:
        bob = EdgeClient(bob_nc, api_key=KEY_ACME, deadline_s=WAIT_S)
        alice = EdgeClient(alice_nc, api_key=KEY_GLOBEX, deadline_s=WAIT_S)
        bob_events, stolen = Events(), Events()
        await bob_nc.subscribe("llm.batch.events.acme.>", cb=bob_events.on_msg)
        for subject in ("llm.batch.events.acme.>", "llm.batch.events.>"):
            await alice_nc.subscribe(subject, cb=stolen.on_msg)
            await alice_violations.wait_for(subject)

        batch = await bob.batches.submit(big_lines(3, 2 * MIB))
        done = await bob.batches.wait(batch.id, timeout_s=WAIT_S)
        assert done.status is BatchStatus.COMPLETED, done
        results = await bob.batches.results(done)
        assert sorted(r.custom_id for r in results) == ["req-0", "req-1", "req-2"]
        for result in results:
            assert result.response is not None
            assert result.response.body["choices"][0]["message"]["content"] == answer
        assert done.output_file_id is not None
        output = await bob.batches.file(done.output_file_id)
        assert output.bytes > 3 * 3 * MIB  # read in several pieces
        await bob_events.until_status(batch.id, "completed")
        assert {m.subject for m in bob_events.seen} == {f"llm.batch.events.acme.{batch.id}"}

        missing = await _not_found(alice.batches.content("file-no-such-file"))
        for file_id in (done.output_file_id, done.input_file_id):
            for attempt in (alice.batches.content(file_id), alice.batches.file(file_id)):
                refused = await _not_found(attempt)
                assert (refused.status, refused.code) == (missing.status, missing.code)
                assert refused.message == missing.message.replace("file-no-such-file", file_id)
        await _not_found(alice.batches.results(done))
        await _not_found(alice.batches.get(batch.id))
        await alice_nc.flush()
        assert stolen.seen == []
        assert bob_violations.seen == []
    finally:
        await bob_nc.close()
        await alice_nc.close()


@pytest.mark.usefixtures("services")
async def test_a_producer_follows_its_own_batch_with_its_own_permissions(
    secured_url: str, fake_openai: FakeOpenAI
) -> None:
    """Alice, allowed only llm.batch.events.globex.>, waits for her batch with progress and
    reads its results: her client asks whoami for the subject and breaks no permission."""
    fake_openai.default = Scripted(body=openai_completion("gpt-4o-mini", "short"))
    violations = Violations()
    alice_nc = await as_user(secured_url, "alice", violations, inbox_prefix="_INBOX.alice")
    try:
        alice = EdgeClient(alice_nc, api_key=KEY_GLOBEX, deadline_s=WAIT_S)
        assert await alice.batches.tenant() == "globex"
        events = Events()
        await alice_nc.subscribe("llm.batch.events.globex.>", cb=events.on_msg)
        seen: list[BatchStatus] = []
        batch = await alice.batches.submit(lines(2, model="big"))
        done = await alice.batches.wait(
            batch.id, timeout_s=WAIT_S, on_progress=lambda b: seen.append(b.status)
        )
        assert seen[-1] is BatchStatus.COMPLETED
        await events.until_status(batch.id, "completed")
        results = await alice.batches.results(done)
        assert [r.response.status_code for r in results if r.response] == [200, 200]
        await alice_nc.flush()
        assert violations.seen == []
    finally:
        await alice_nc.close()


@pytest.mark.usefixtures("services")
async def test_files_over_the_bridge_under_the_shipped_permissions(secured_url: str) -> None:
    """With the bridge as user bridge: acme uploads a 6 MiB file over HTTP and reads it back
    over HTTP and, as producer bob, through the brokers, byte-identical both ways; globex gets
    404 over HTTP."""
    bridge = BridgeServer(
        BridgeOptions(
            nats_url=user_url(secured_url, "bridge"), port=0, nats_inbox_prefix="_INBOX.bridge"
        )
    )
    await bridge.start()
    violations = Violations()
    bob_nc = await as_user(secured_url, "bob", violations, inbox_prefix="_INBOX.bob")
    try:
        base_url = f"http://127.0.0.1:{bridge.port}/v1"
        http_acme = openai.AsyncOpenAI(base_url=base_url, api_key=KEY_ACME, max_retries=0)
        http_globex = openai.AsyncOpenAI(base_url=base_url, api_key=KEY_GLOBEX, max_retries=0)
        data = os.urandom(6 * MIB)
        uploaded = await http_acme.files.create(
            file=("in.jsonl", io.BytesIO(data)), purpose="batch"
        )
        assert (await http_acme.files.content(uploaded.id)).content == data
        with pytest.raises(openai.NotFoundError):
            await http_globex.files.content(uploaded.id)
        bob = EdgeClient(bob_nc, api_key=KEY_ACME, deadline_s=WAIT_S)
        assert await bob.batches.content(uploaded.id) == data
        assert violations.seen == []
    finally:
        await bob_nc.close()
        await bridge.stop()


async def _not_found(call: Any) -> NotFoundError:
    """The 404 a call raises."""
    with pytest.raises(NotFoundError) as refused:
        await call
    return refused.value


# -- a file larger than the server's max_payload -------------------------------------------

SMALL_MAX_PAYLOAD = MIB


@pytest.fixture(scope="module")
def small_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server of NATS's default 1 MiB messages."""
    server = EmbeddedNats(
        tmp_path_factory.mktemp("js-small"), port=-1, max_payload=SMALL_MAX_PAYLOAD
    )
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
async def small_stack(small_nats_url: str, make_stack: StackFactory) -> Stack:
    config = config_from(f"""
        [cache]
        enabled = false
        [providers.mock]
        kind = "mock"
        [models.mock]
        deployments = [{{ provider = "mock" }}]
        {TENANTS}
    """)
    return await make_stack(small_nats_url, config, bridge=True)


async def test_a_file_larger_than_max_payload_comes_back_whole(small_stack: Stack) -> None:
    """A 5 MiB file of every byte value, uploaded through the bridge by acme on a server of
    1 MiB messages, comes back byte-identical through the Python client (in pieces, into a
    file too) and over HTTP; globex gets 404 from both."""
    data = os.urandom(5 * MIB + 12345)
    http_acme = openai.AsyncOpenAI(base_url=small_stack.base_url, api_key=KEY_ACME, max_retries=0)
    http_globex = openai.AsyncOpenAI(
        base_url=small_stack.base_url, api_key=KEY_GLOBEX, max_retries=0
    )
    uploaded = await http_acme.files.create(file=("big.jsonl", io.BytesIO(data)), purpose="batch")
    acme = EdgeClient(small_stack.nc, api_key=KEY_ACME, deadline_s=WAIT_S)
    globex = EdgeClient(small_stack.nc, api_key=KEY_GLOBEX, deadline_s=WAIT_S)
    assert small_stack.nc.max_payload == SMALL_MAX_PAYLOAD < len(data)

    assert await acme.batches.content(uploaded.id) == data
    spool = io.BytesIO()
    assert await acme.batches.download(uploaded.id, spool, piece_bytes=300_000) == len(data)
    assert hashlib.sha256(spool.getvalue()).digest() == hashlib.sha256(data).digest()
    assert (await http_acme.files.content(uploaded.id)).content == data

    await _not_found(globex.batches.content(uploaded.id))
    with pytest.raises(openai.NotFoundError):
        await http_globex.files.content(uploaded.id)


async def test_bad_file_requests_get_error_envelopes(small_stack: Stack) -> None:
    """Malformed llm.batch.file.content requests are 400 envelopes naming the fault; an
    offset at the end is an empty last piece; no key is a 401."""
    auth = {headers.AUTHORIZATION: f"Bearer {KEY_ACME}"}
    acme = EdgeClient(small_stack.nc, api_key=KEY_ACME, deadline_s=WAIT_S)
    batch = await acme.batches.submit(lines(1))
    file_id = batch.input_file_id
    size = (await acme.batches.file(file_id)).bytes

    async def ask(body: bytes, hdrs: dict[str, str] | None = auth) -> tuple[str, bytes]:
        reply = await small_stack.nc.request(
            subjects.BATCH_FILE_CONTENT, body, timeout=WAIT_S, headers=hdrs
        )
        return (reply.headers or {})[headers.STATUS], reply.data

    def envelope(data: bytes) -> dict[str, Any]:
        error: dict[str, Any] = msgspec.json.decode(data)["error"]
        assert set(error) == {"message", "type", "code", "param"}
        return error

    for body, param in [
        (b"not json", None),
        (b"[1, 2]", None),
        (b"{}", None),
        (msgspec.json.encode({"id": file_id, "offset": -1}), None),
        (msgspec.json.encode({"id": file_id, "offset": "0"}), None),
        (msgspec.json.encode({"id": file_id, "length": 0}), None),
        (msgspec.json.encode({"id": file_id, "offset": size + 1}), "offset"),
    ]:
        status, data = await ask(body)
        assert status == "400", body
        assert envelope(data)["param"] == param, body
    status, data = await ask(msgspec.json.encode({"id": file_id, "offset": size}))
    assert (status, data) == ("200", b"")
    status, data = await ask(msgspec.json.encode({"id": file_id}), hdrs=None)
    assert status == "401"
    assert envelope(data)["code"] == "invalid_api_key"
