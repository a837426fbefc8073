"""The operator console, used as an operator would: real headless Chromium against a real
stack (two brokers, two workers, the bridge, NATS with JetStream, Redis).

Selenium blocks, and the stack runs on this test's event loop, so every browser step runs in
a thread (``asyncio.to_thread``) while the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import msgspec
import pytest

from broker.tenancy.tenants import hash_key
from tests.support.batch import lines as batch_lines
from tests.support.browser import Page, chromium, needs_chromium
from tests.support.fake_provider_batches import running_batches
from tests.support.servers import RedisServer
from tests.support.stack import Stack, StackFactory, config_from

ADMIN_KEY = "sk-le-console-admin-key-for-tests-0000000000000"
TEAM_KEY = "sk-le-console-team-key-for-tests-00000000000000"
CONFIG = f"""
    [cache]
    l2 = "redis"
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
    rpm = 1000
    tpm = 1000000
"""


@pytest.fixture
async def stack(nats_url: str, own_redis: RedisServer, make_stack: StackFactory) -> Stack:
    """Two brokers and the bridge, on a Redis of the test's own (keys minted on the page
    would make keys required for the later tests sharing the session's Redis)."""
    return await make_stack(
        nats_url, config_from(CONFIG), redis_url=own_redis.url, brokers=2, bridge=True
    )


async def chat(
    stack: Stack, key: str, namespace: str = "console", content: str = "hi"
) -> httpx.Response:
    assert stack.http is not None
    return await stack.http.post(
        "/chat/completions",
        json={"model": "mock", "messages": [{"role": "user", "content": content}]},
        headers={"Authorization": f"Bearer {key}", "X-Cache-Namespace": namespace},
    )


@needs_chromium
@pytest.mark.browser
async def test_operator_runs_the_mesh_from_the_console(stack: Stack) -> None:
    """Both brokers show; a breaker opened from the page fails requests over; a 200-line
    batch's bar reaches 100 %; a purge makes the next request miss; a key created on the page
    works until it is revoked there."""
    assert stack.bridge is not None
    url = f"http://127.0.0.1:{stack.bridge.port}/console"
    with chromium() as driver:
        page = Page(driver, url)
        await asyncio.to_thread(page.sign_in, ADMIN_KEY)

        brokers = await asyncio.to_thread(
            page.attributes,
            "#services-body tr[data-role=broker][data-state=up]",
            "data-id",
            lambda ids: len(ids) == 2,
        )
        assert set(brokers) == {b.service_id for b in stack.brokers}
        await asyncio.to_thread(
            page.until, "#services-body tr[data-role^=worker]", lambda rows: len(rows) == 2
        )
        # the bridge serving the page is listed beside them
        bridge = await asyncio.to_thread(
            page.attributes, "#services-body tr[data-role=bridge][data-state=up]", "data-id"
        )
        assert bridge == [stack.bridge.service_id]

        # breaker: forced open on every broker from the page, requests go to the backup
        assert (await chat(stack, ADMIN_KEY, content="before")).headers[
            "llm-deployment"
        ] == "mock@primary"
        await asyncio.to_thread(
            page.click, 'tr[data-deployment="mock@primary"] button[aria-label^="Force open"]'
        )
        await asyncio.to_thread(page.notice, "open mock@primary on 2 brokers")
        await asyncio.to_thread(page.until, 'tr[data-deployment="mock@primary"][data-state=open]')
        for n in range(4):  # both brokers, whichever answers
            reply = await chat(stack, ADMIN_KEY, content=f"during {n}")
            assert reply.status_code == 200
            assert reply.headers["llm-deployment"] == "mock@backup"
        # the backup's last minute: those four answers, merged from both brokers
        backup = 'tr[data-deployment="mock@backup"]'
        p50, p99, errors = await asyncio.to_thread(  # in the order of the columns
            page.texts,
            f"{backup} td.p50, {backup} td.p99, {backup} td.errors",
            lambda texts: "0.0 % of 4" in texts,
        )
        assert errors == "0.0 % of 4"
        for shown in (p50, p99):
            assert shown.endswith(" ms"), shown
            assert 0 < float(shown.removesuffix(" ms")) < 1000
        await asyncio.to_thread(
            page.click, 'tr[data-deployment="mock@primary"] button[aria-label^="Reset"]'
        )
        await asyncio.to_thread(page.until, 'tr[data-deployment="mock@primary"][data-state=closed]')

        # a 200-line batch, watched to the end
        lines = [
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "mock", "messages": [{"role": "user", "content": f"b{i}"}]},
            }
            for i in range(200)
        ]
        submitted = await stack.nc.request(
            "llm.batch.submit",
            msgspec.json.encode({"endpoint": "/v1/chat/completions", "lines": lines}),
            timeout=10,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        batch_id = msgspec.json.decode(submitted.data)["id"]
        row = f'#batches-body tr[data-batch="{batch_id}"]'
        await asyncio.to_thread(
            page.until, f"{row}[data-status=in_progress], {row}[data-status=completed]"
        )
        page.screenshot("console.png")
        await asyncio.to_thread(page.until, f"{row}[data-status=completed]")
        value = await asyncio.to_thread(page.attributes, f"{row} progress", "value")
        top = await asyncio.to_thread(page.attributes, f"{row} progress", "max")
        assert (value, top) == (["200"], ["200"])
        progress = await asyncio.to_thread(page.texts, f"{row} .percent, {row} .counts")
        assert progress == ["100 %", "200 / 0 / 200"]

        # purge a namespace from the page: the next request misses
        assert (await chat(stack, ADMIN_KEY, namespace="purged")).headers["x-cache"] == "MISS"
        # cached (a loaded machine may time an L2 write out: the other broker then misses
        # once more and stores it again)
        for _ in range(10):
            cached = (await chat(stack, ADMIN_KEY, namespace="purged")).headers["x-cache"]
            if cached.startswith("HIT"):
                break
            await asyncio.sleep(0.2)
        assert cached.startswith("HIT"), cached
        await asyncio.to_thread(page.type_into, "#purge-namespace", "purged")
        await asyncio.to_thread(page.type_into, "#purge-tenant", "ops")
        await asyncio.to_thread(page.click, "#purge-button")
        await asyncio.to_thread(page.confirm)
        await asyncio.to_thread(page.notice, "purged purged of ops on 2 brokers")
        assert (await chat(stack, ADMIN_KEY, namespace="purged")).headers["x-cache"] == "MISS"

        # the L2 panel: Redis's keys and memory, a new entry counted within a poll or two
        entries, size, scope = await asyncio.to_thread(  # in the order of the page
            page.texts, "#l2-entries, #l2-bytes, #l2-scope", lambda t: t[0].isdigit()
        )
        assert size.endswith(("KiB", "MiB")), size
        assert scope == "the whole Redis database"
        assert (await chat(stack, ADMIN_KEY, content="one more entry")).headers["x-cache"] == "MISS"
        await asyncio.to_thread(
            page.texts, "#l2-entries", lambda t: t[0].isdigit() and int(t[0]) > int(entries)
        )

        # a run-time key, created and revoked on the page
        await asyncio.to_thread(page.type_into, "#key-tenant", "team")
        await asyncio.to_thread(page.click, "#create-key")
        new_key = (await asyncio.to_thread(page.texts, "#new-key", lambda t: bool(t[0])))[0]
        for n in range(4):  # every broker has it: the page heard of it after they did
            assert (await chat(stack, new_key, content=f"new {n}")).status_code == 200
        revoke = f'#tenants-body button[data-hash="{hash_key(new_key)}"]'
        await asyncio.to_thread(page.click, revoke)
        await asyncio.to_thread(page.confirm)
        await asyncio.to_thread(page.notice, "revoked a key of team")
        for n in range(4):
            assert (await chat(stack, new_key, content=f"revoked {n}")).status_code == 401


async def test_console_needs_an_admin_key(stack: Stack) -> None:
    """A tenant's ordinary key gets 403 from the console's API, no key 401, an admin key 200."""
    assert stack.bridge is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.bridge.port}") as http:
        team = await http.get("/console/api/state", headers={"Authorization": f"Bearer {TEAM_KEY}"})
        anonymous = await http.get("/console/api/state")
        admin = await http.get(
            "/console/api/state", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        page = await http.get("/console")
    assert (team.status_code, anonymous.status_code, admin.status_code) == (403, 401, 200)
    assert "LLM Edge console" in page.text


async def test_console_counts_each_workers_calls(stack: Stack) -> None:
    """Worker rows show the calls each worker answered, and the spend panel a limited
    tenant's requests and tokens this minute against its rpm and tpm."""
    assert stack.bridge is not None
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.bridge.port}") as http:

        async def seen() -> tuple[dict[str, int], dict[str, int]]:
            state = (await http.get("/console/api/state", headers=admin)).json()
            calls = {"worker-primary": 0, "worker-backup": 0}
            for service in state["services"]:
                if service["role"] in calls:
                    calls[service["role"]] += service["requests"] or 0
            team = next(s for s in state["spend"]["tenants"] if s["tenant"] == "team")
            return calls, team

        calls_before, team_before = await seen()
        for i in range(3):
            body = {"model": "mock", "messages": [{"role": "user", "content": f"count me {i}"}]}
            msg = await stack.nc.request(
                "llm.chat",
                json.dumps(body).encode(),
                timeout=10,
                headers={"Authorization": f"Bearer {TEAM_KEY}", "Cache-Control": "no-cache"},
            )
            assert (msg.headers or {})["Llm-Status"] == "200"
        async with asyncio.timeout(10):  # the console polls the mesh once a second
            while (calls_after := (await seen())[0])["worker-primary"] < (  # noqa: ASYNC110
                calls_before["worker-primary"] + 3
            ):
                await asyncio.sleep(0.2)
        team_after = (await seen())[1]
    assert calls_after["worker-primary"] - calls_before["worker-primary"] == 3
    assert calls_after["worker-backup"] == calls_before["worker-backup"]
    if team_after["rpm_used"] >= team_before["rpm_used"]:  # (a new minute starts again)
        assert team_after["rpm_used"] - team_before["rpm_used"] == 3  # across both brokers
        assert team_after["tpm_used"] > team_before["tpm_used"]
    assert team_after["rpm"] == 1000


@needs_chromium
@pytest.mark.browser
async def test_operator_gives_a_key_its_own_models_and_limits(stack: Stack) -> None:
    """A key created on the page with a model list and an rpm shows them in the keys panel
    and is held to them; edited there, its new list applies on every broker at once."""
    assert stack.bridge is not None
    url = f"http://127.0.0.1:{stack.bridge.port}/console"
    with chromium() as driver:
        page = Page(driver, url)
        await asyncio.to_thread(page.sign_in, ADMIN_KEY)
        await asyncio.to_thread(page.type_into, "#key-tenant", "team")
        await asyncio.to_thread(page.type_into, "#key-models", "mock, mock-*")
        await asyncio.to_thread(page.type_into, "#key-rpm", "5")
        await asyncio.to_thread(page.click, "#create-key")
        new_key = (await asyncio.to_thread(page.texts, "#new-key", lambda t: bool(t[0])))[0]
        row = f'#tenants-body li[data-key="{hash_key(new_key)}"] .grant'
        shown = (await asyncio.to_thread(page.texts, row))[0]
        assert "(run-time) models mock, mock-* · rpm 5" in shown
        assert (await chat(stack, new_key, content="allowed")).status_code == 200

        await asyncio.to_thread(
            page.click, f'#tenants-body button[data-edit="{hash_key(new_key)}"]'
        )
        await asyncio.to_thread(page.type_into, "#edit-models", "other-*")
        await asyncio.to_thread(page.click, "#save-key")
        await asyncio.to_thread(page.notice, "saved key")
        await asyncio.to_thread(page.texts, row, lambda t: "models other-* · rpm 5" in t[0])
        for n in range(4):  # every broker: the page heard of the change after they did
            refused = await chat(stack, new_key, content=f"now refused {n}")
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "model_not_allowed"
        await asyncio.to_thread(page.screenshot, "keys-panel.png")


@needs_chromium
@pytest.mark.browser
async def test_console_shows_where_an_offloaded_batch_runs(
    nats_url: str, make_stack: StackFactory
) -> None:
    """A batch of 30 lines for a model with OpenAI's Batch API (two sub-batches of 20 at
    most; one line fails there, and runs on the normal path) and 6 for the mock: its row
    counts each line once."""
    async with running_batches(polls=1) as fake:
        config = config_from(f"""
            [cache]
            enabled = false
            [batch]
            poll_s = 0.05
            offload = "auto"
            offload_poll_s = 0.02
            offload_limits = {{ default = [20, 10000000] }}
            [providers.openai]
            kind = "openai"
            base_url = "{fake.base_url}"
            api_key_env = "OPENAI_KEY"
            [providers.mock]
            kind = "mock"
            [models.gpt]
            deployments = [{{ provider = "openai", model = "gpt-4o-mini" }}]
            [models.mock]
            deployments = [{{ provider = "mock" }}]
        """)
        stack = await make_stack(nats_url, config, bridge=True, environ={"OPENAI_KEY": "sk-t"})
        rows = batch_lines(30, model="gpt") + batch_lines(6, prefix="m")
        rows[0]["body"]["messages"][0]["content"] = "FAIL"  # fails in its provider batch
        body = {"endpoint": "/v1/chat/completions", "lines": rows, "completion_window": "24h"}
        submitted = await stack.nc.request(
            "llm.batch.submit", msgspec.json.encode(body), timeout=10
        )
        batch_id = msgspec.json.decode(submitted.data)["id"]
        assert stack.bridge is not None
        with chromium() as driver:
            page = Page(driver, f"http://127.0.0.1:{stack.bridge.port}/console")
            await asyncio.to_thread(driver.get, page.url)
            row = f'#batches-body tr[data-batch="{batch_id}"][data-status=completed]'
            (shown,) = await asyncio.to_thread(page.texts, f"{row} td.offload")
        assert shown == "openai Batch API: 29 lines, 2 sub-batches; normal path: 7"
