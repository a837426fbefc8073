"""Batches when keys are required: each tenant's files and batches are its own, and a batch's
lines run as the tenant that created it."""

from __future__ import annotations

import io
import json
import uuid

import openai
import pytest

from broker.tenancy.tenants import hash_key
from tests.support.batch import FINAL, batch_stack, jsonl, lines, wait_status
from tests.support.stack import Stack, StackFactory, config_from

KEY_ACME, KEY_GLOBEX = (f"sk-le-test-{n}-{uuid.uuid4().hex}" for n in ("acme", "globex"))


@pytest.fixture
async def stack(nats_url: str, make_stack: StackFactory) -> Stack:
    config = config_from(f"""
        [cache]
        enabled = false
        [batch]
        poll_s = 0.1
        [tenants.acme]
        keys = ["{hash_key(KEY_ACME)}"]
        pii = "redact"
        [tenants.globex]
        keys = ["{hash_key(KEY_GLOBEX)}"]
        [providers.mock]
        kind = "mock"
        [models.mock]
        deployments = [{{ provider = "mock" }}]
    """)
    return await batch_stack(make_stack, nats_url, config)


def sdk(stack: Stack, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.base_url, api_key=key, max_retries=0)


async def test_batches_belong_to_their_tenant(stack: Stack) -> None:
    """acme's batch completes with its lines run as acme (its PII policy applies); globex
    cannot see or touch acme's files and batches; no key is a 401."""
    acme, globex = sdk(stack, KEY_ACME), sdk(stack, KEY_GLOBEX)
    rows = lines(5)
    rows[0]["body"]["messages"][0]["content"] = "write to jane@example.com"
    uploaded = await acme.files.create(file=("in.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
    batch = await acme.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    auth = {"Authorization": f"Bearer {KEY_ACME}"}
    done = await wait_status(stack.nc, batch.id, FINAL, hdrs=auth)
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    output = await acme.files.content(done["output_file_id"])
    results = {r["custom_id"]: r for r in map(json.loads, output.text.splitlines())}
    redacted = results["req-0"]["response"]["body"]["choices"][0]["message"]["content"]
    assert "[EMAIL_1]" in redacted
    assert "jane@example.com" not in redacted

    with pytest.raises(openai.NotFoundError):
        await globex.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        await globex.files.content(done["output_file_id"])
    with pytest.raises(openai.NotFoundError):
        await globex.files.delete(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        await globex.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        await globex.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):  # a tenant cannot run a batch on another's file
        await globex.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert batch.id not in [b.id async for b in globex.batches.list()]
    assert uploaded.id not in [f.id async for f in globex.files.list()]
    assert batch.id in [b.id async for b in acme.batches.list()]
    assert uploaded.id in [f.id async for f in acme.files.list()]

    stranger = sdk(stack, "sk-le-not-a-key")
    with pytest.raises(openai.AuthenticationError):
        await stranger.files.create(file=("in.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
    with pytest.raises(openai.AuthenticationError):
        await stranger.batches.list()
    assert stack.http is not None
    anonymous = await stack.http.get("/files")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "invalid_api_key"
