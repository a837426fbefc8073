"""The Gemini API's batch mode as a worker speaks it, against the fake upstream: ``find``
pages the list of batches, a cancelled batch answers no line, a line the translation cannot
carry stays out of the batch, and only AI Studio providers offer batches."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.support.fake_gemini_batches import GEMINI_KEY
from tests.support.fake_provider_batches import FakeBatches, running_batches
from workers.batch_gemini import GeminiBatches
from workers.config import ProviderConfig
from workers.gemini import GeminiProvider
from workers.registry import build_provider
from workers.upstream_http import http_client


def line(text: str) -> bytes:
    body = {"model": "gem", "messages": [{"role": "user", "content": text}], "max_tokens": 8}
    return json.dumps({"custom_id": text, "body": body}).encode()


@pytest.fixture
async def fake() -> AsyncIterator[FakeBatches]:
    async with running_batches(polls=1) as server:
        yield server


@pytest.fixture
async def batches(fake: FakeBatches) -> AsyncIterator[GeminiBatches]:
    raw = {"kind": "gemini", "base_url": f"{fake.base_url.removesuffix('/v1')}/v1beta"}
    config = ProviderConfig.from_mapping("gemini", {**raw, "api_key_env": "GEMINI_KEY"})
    async with http_client() as session:
        provider = build_provider(config, {"GEMINI_KEY": GEMINI_KEY}, session)
        assert isinstance(provider, GeminiProvider)
        found = provider.batches()
        assert found is not None
        yield found


async def test_find_pages_the_batch_list_for_the_tag(
    fake: FakeBatches, batches: GeminiBatches
) -> None:
    """The oldest of 150 batches is found on the list's second page; a tag no batch carries
    is surely absent once every page was read."""
    first = await batches.submit([line("a")], "gemini-x", "offload-b-0", 0.0)
    for n in range(149):
        await batches.submit([line("b")], "gemini-x", f"offload-other-{n}", 0.0)
    assert await batches.find("offload-b-0", 0.0) == first
    assert fake.list_calls["gemini"] == 2
    assert await batches.find("offload-missing-0", 0.0) is None


async def test_cancelled_batch_answers_no_line(batches: GeminiBatches) -> None:
    """A batch cancelled before it ended reports ``BATCH_STATE_CANCELLED`` and no results, so
    its lines run on the normal path."""
    batch_id = await batches.submit([line("a"), line("b")], "gemini-x", "offload-c-0", 0.0)
    status = await batches.cancel(batch_id)
    assert (status.ended, status.provider_status) == (True, "BATCH_STATE_CANCELLED")
    assert list(await batches.results(batch_id)) == []


async def test_line_the_translation_refuses_stays_out(
    fake: FakeBatches, batches: GeminiBatches
) -> None:
    """A line whose chat body cannot be translated is left out of the batch (the normal path
    answers it); the other lines keep their own line numbers in the results."""
    bad = json.dumps({"custom_id": "x", "body": {"model": "gem", "messages": "nope"}}).encode()
    batch_id = await batches.submit([line("a"), bad, line("c")], "gemini-x", "offload-d-0", 0.0)
    assert [row["key"] for row in fake.batches[batch_id].rows] == ["r0", "r2"]
    await batches.status(batch_id)
    await batches.status(batch_id)  # past the fake's polls: it succeeded
    results = await batches.results(batch_id)
    assert [
        (i, json.loads(body or b"{}")["choices"][0]["message"]["content"], error)
        for i, body, error in results
    ] == [(0, "echo a", ""), (2, "echo c", "")]


async def test_vertex_offers_no_batches(fake: FakeBatches) -> None:
    """Gemini served by Vertex AI (an OAuth token, not a key) has no batch mode here: Vertex
    AI's batch prediction needs Cloud Storage."""
    config = ProviderConfig.from_mapping("g", {"kind": "gemini", "base_url": fake.base_url})
    async with http_client() as session:
        provider = GeminiProvider(config, session, f"{fake.base_url}/models", _TokenAuth())
        assert provider.batches() is None


class _TokenAuth:
    async def headers(self) -> dict[str, str]:
        return {"authorization": "Bearer t"}

    def rejected(self) -> None:
        """Nothing to forget."""

    def scrub(self, text: str) -> str:
        return text
