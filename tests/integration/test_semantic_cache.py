"""The semantic tier end to end: two brokers, real nats-server and redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import NoReturn

import msgspec
import openai
import pytest

from broker.cache import embedder
from broker.cache.embed import Embedder
from broker.cache.semantic import SemanticCache
from broker.tenancy.tenants import hash_key
from edge_client.chat import stream_messages
from schemas import headers
from schemas.jetstream import SEMANTIC_BUCKET
from tests.support.cache import chat, config
from tests.support.servers import RedisServer
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI

pytestmark = pytest.mark.model

SEMANTIC = """
        [cache.semantic]
        enabled = true
"""


@pytest.fixture(scope="module", autouse=True)
def one_model() -> Iterator[Embedder]:
    """Every broker of this module embeds with one loaded model. A broker loads its model at
    start (reading the weights, measuring the int8 calibration, building the ONNX session):
    seconds of CPU per broker, and these tests start a dozen brokers. The broker still calls
    :func:`~broker.cache.embedder.load_minilm` (with no arguments, as the stand-in takes); the
    model it returns, whose ``embed`` keeps no state between calls, is loaded here once."""
    model = embedder.load_minilm()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(embedder, "load_minilm", lambda: model)
        yield model


@pytest.fixture
async def two(
    nats_url: str, redis_server: RedisServer, fake_openai: FakeOpenAI, make_stack: StackFactory
) -> Stack:
    cfg = config_from(config(fake_openai.base_url, extra=SEMANTIC))
    return await make_stack(nats_url, cfg, redis_url=redis_server.url, brokers=2)


def _semantic(stack: Stack, at: int) -> SemanticCache:
    cache = stack.brokers[at].cache
    assert cache is not None
    assert cache.semantic is not None
    return cache.semantic


async def _seen_by_all(stack: Stack, prefix: str) -> None:
    """Wait (bounded) until every broker's index holds an entry under ``prefix``."""
    for i in range(2):
        semantic = _semantic(stack, i)
        async with semantic.changed:
            await asyncio.wait_for(
                semantic.changed.wait_for(lambda s=semantic: s.index.ids(prefix)), 10
            )


async def _ask(stack: Stack, text: str, namespace: str) -> tuple[str, str]:
    msg = await stack.nc.request(
        "llm.chat", chat(text), timeout=20, headers={headers.CACHE_NAMESPACE: namespace}
    )
    assert msg.headers is not None
    assert msg.headers.get(headers.STATUS, "200") == "200", msg.data
    return msg.headers[headers.CACHE], msg.headers.get(headers.SEMANTIC_SIMILARITY, "")


async def test_paraphrase_hits_in_the_other_broker(
    two: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """A reworded question is served from an answer either broker stored; a hard negative
    and another namespace miss; a purge removes the entry everywhere."""
    assert (await _ask(two, "What is the capital of France?", namespace))[0] == "MISS"
    await _seen_by_all(two, f"default:{namespace}:")
    for _ in range(2):  # the queue group may pick either broker: both must hit
        cache, similarity = await _ask(two, "Tell me the capital of France.", namespace)
        assert cache == "HIT-SEMANTIC"
        assert float(similarity) >= 0.9
    assert (await _ask(two, "What is the capital of Germany?", namespace))[0] == "MISS"
    assert (await _ask(two, "Tell me the capital of France.", namespace + "x"))[0] == "MISS"
    upstream_calls = len(fake_openai.received)
    purge = await two.nc.request(
        "llm.admin.cache.purge", msgspec.json.encode({"namespace": namespace}), timeout=5
    )
    # France's and Germany's questions; the other namespace's entry stays
    assert msgspec.json.decode(purge.data)["purged"]["semantic"] == 2
    ours = f"default:{namespace}:"
    for i in range(2):  # every broker takes the purge; each index forgets the entries
        semantic = _semantic(two, i)
        async with semantic.changed:
            await asyncio.wait_for(
                semantic.changed.wait_for(lambda s=semantic: not s.index.ids(ours)), 10
            )
        assert semantic.index.ids(f"default:{namespace}x:")
    # and the shared bucket no longer holds them, for brokers that start later
    bucket = await two.nc.jetstream().key_value(SEMANTIC_BUCKET)
    keys = await bucket.keys()
    assert not [k for k in keys if k.startswith(f"default.{namespace}.")]
    assert [k for k in keys if k.startswith(f"default.{namespace}x.")]
    assert (await _ask(two, "Which city is France's capital?", namespace))[0] == "MISS"
    assert len(fake_openai.received) == upstream_calls + 1


async def test_semantic_entries_expire_with_their_answers(
    two: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """An answer kept for one second (``Cache-Control: max-age=1``) serves reworded questions
    for that second only; after it they go upstream."""
    hdrs = {headers.CACHE_NAMESPACE: namespace, "Cache-Control": "max-age=1"}
    first = await two.nc.request(
        "llm.chat", chat("How many days are in a leap year?"), timeout=20, headers=hdrs
    )
    assert (first.headers or {})[headers.CACHE] == "MISS"
    await _seen_by_all(two, f"default:{namespace}:")
    assert (await _ask(two, "How many days does a leap year have?", namespace))[0] == (
        "HIT-SEMANTIC"
    )
    await asyncio.sleep(1.2)
    upstream_calls = len(fake_openai.received)
    assert (await _ask(two, "In a leap year, how many days are there?", namespace))[0] == "MISS"
    assert len(fake_openai.received) == upstream_calls + 1
    for i in range(2):  # and it leaves every broker's index (the bucket sends no event)
        semantic = _semantic(two, i)
        first_entry = [
            entry_id
            for entry_id in semantic.index.ids(f"default:{namespace}:")
            if semantic.index._expires[entry_id] < semantic._clock()
        ]
        async with semantic.changed:
            await asyncio.wait_for(
                semantic.changed.wait_for(
                    lambda s=semantic, gone=first_entry: not set(gone) & set(s.index.ids(""))
                ),
                10,
            )


async def test_a_flood_of_distinct_misses_stays_within_the_bounds(
    nats_url: str, redis_server: RedisServer, fake_openai: FakeOpenAI, make_stack: StackFactory
) -> None:
    """Hundreds of distinct questions: the shared bucket stays within its byte bound and each
    broker's index within its entry bound, and the newest questions still hit."""
    bounded = (
        SEMANTIC
        + """
        max_entries = 50
        max_bytes = 65536
        bucket = "flood"
    """
    )
    cfg = config_from(config(fake_openai.base_url, extra=bounded))
    stack = await make_stack(nats_url, cfg, redis_url=redis_server.url, brokers=2)
    for n in range(200):
        await _ask(stack, f"What is the population of town number {n} in the valley?", "flood")
    js = stack.nc.jetstream()
    info = await js.stream_info("KV_flood")
    assert info.config.max_bytes == 65536
    assert info.state.bytes <= 65536
    for i in range(2):
        assert 0 < len(_semantic(stack, i).index) <= 50
    assert (await _ask(stack, "How tall is Mount Kilimanjaro?", "flood"))[0] == "MISS"
    for i in range(2):  # a full bucket drops its oldest entries, not the newest
        semantic = _semantic(stack, i)
        async with semantic.changed:
            await asyncio.wait_for(
                semantic.changed.wait_for(
                    lambda s=semantic: any(
                        "Kilimanjaro" in e.text
                        for c in s.index._contexts.values()
                        for e in c.entries
                    )
                ),
                10,
            )
    assert (await _ask(stack, "Tell me how tall Mount Kilimanjaro is.", "flood"))[0] == (
        "HIT-SEMANTIC"
    )


async def test_streamed_paraphrase_is_served_from_the_semantic_tier(
    two: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """A streamed reworded question replays an earlier answer (HIT-SEMANTIC) without an
    upstream call, and its hard negative opens a stream upstream."""
    assert (await _ask(two, "How many legs does a spider have?", namespace))[0] == "MISS"
    await _seen_by_all(two, f"default:{namespace}:")
    upstream_calls = len(fake_openai.received)
    hdrs = {headers.CACHE_NAMESPACE: namespace}
    messages = stream_messages(
        two.nc, chat("How many legs do spiders have?", stream=True), request_headers=hdrs
    )
    seen = [msg.headers or {} async for msg in messages]
    assert seen[-1][headers.STREAM] == "end"
    assert {h[headers.CACHE] for h in seen} == {"HIT-SEMANTIC"}
    assert float(seen[0][headers.SEMANTIC_SIMILARITY]) >= 0.9
    assert len(fake_openai.received) == upstream_calls
    negative = stream_messages(
        two.nc, chat("How many legs does a beetle have?", stream=True), request_headers=hdrs
    )
    assert {(m.headers or {})[headers.CACHE] async for m in negative} == {"MISS"}
    assert len(fake_openai.received) == upstream_calls + 1


async def test_paraphrase_over_http_is_served_by_the_other_broker(
    nats_url: str,
    redis_server: RedisServer,
    fake_openai: FakeOpenAI,
    namespace: str,
    make_stack: StackFactory,
) -> None:
    """Through the HTTP bridge, with the official SDK unchanged: broker A answers a question;
    with A gone, broker B serves its rewording from A's entry (``X-Cache: HIT-SEMANTIC``, the
    similarity, A's answer, no upstream call), over HTTP and over NATS; a changed number and
    ``Cache-Control: no-cache`` go upstream."""
    cfg = config_from(config(fake_openai.base_url, extra=SEMANTIC))
    first_stack = await make_stack(nats_url, cfg, redis_url=redis_server.url, bridge=True)
    client = openai.AsyncOpenAI(base_url=first_stack.base_url, api_key="unused", max_retries=0)
    space = {headers.CACHE_NAMESPACE: namespace}
    try:

        async def ask(text: str, **extra: str) -> tuple[str, str, str]:
            raw = await client.chat.completions.with_raw_response.create(
                model="m",
                messages=[{"role": "user", "content": text}],
                extra_headers={**space, **extra},
            )
            answer = raw.parse().choices[0].message.content or ""
            hit = raw.headers.get(headers.CACHE, "")
            return hit, raw.headers.get(headers.SEMANTIC_SIMILARITY, ""), answer

        first = await ask("Convert 5 km to miles")  # broker A, the only one
        assert first[0] == "MISS"
        other = await make_stack(nats_url, cfg, redis_url=redis_server.url, providers=[])
        both = Stack(nc=other.nc, brokers=[*first_stack.brokers, *other.brokers])
        await _seen_by_all(both, f"default:{namespace}:")
        await first_stack.brokers.pop().stop(1.0)  # from here on only B answers
        upstream_calls = len(fake_openai.received)
        hit, similarity, answer = await ask("Convert five kilometres to miles")
        assert (hit, answer) == ("HIT-SEMANTIC", first[2])
        assert 0.9 <= float(similarity) <= 1.0
        assert (await _ask(other, "Convert five kilometers into miles", namespace))[0] == (
            "HIT-SEMANTIC"
        )
        assert len(fake_openai.received) == upstream_calls
        assert (await ask("Convert 50 km to miles"))[0] == "MISS"
        no_cache = await ask("Convert five kilometres to miles", **{"Cache-Control": "no-cache"})
        assert no_cache[0] == "MISS"
        assert len(fake_openai.received) == upstream_calls + 2
    finally:
        await client.close()


class _BrokenModel:
    dim = 384

    def embed(self, text: str) -> NoReturn:
        raise RuntimeError("the model failed")


async def test_a_failing_embedder_costs_a_miss_never_an_error(
    two: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """When the semantic tier cannot embed, requests are answered as misses (200, upstream)
    and their answers are still cached exactly: the tier is never a reason to fail."""
    for i in range(2):
        _semantic(two, i)._embedder = _BrokenModel()
    upstream_calls = len(fake_openai.received)
    assert await _ask(two, "What is the tallest mountain on Earth?", namespace) == ("MISS", "")
    assert await _ask(two, "Which mountain is the tallest on Earth?", namespace) == ("MISS", "")
    assert len(fake_openai.received) == upstream_calls + 2
    hit, _ = await _ask(two, "What is the tallest mountain on Earth?", namespace)
    assert hit in {"HIT-L1", "HIT-L2"}


KEY_A, KEY_B = "sk-edge-semantic-tenant-a", "sk-edge-semantic-tenant-b"


async def test_one_tenants_answers_never_serve_another(
    nats_url: str,
    redis_server: RedisServer,
    fake_openai: FakeOpenAI,
    namespace: str,
    make_stack: StackFactory,
) -> None:
    """A reworded question hits only the tenant that asked first; another tenant goes
    upstream."""
    tenants = f"""
        [tenants.a]
        keys = ["{hash_key(KEY_A)}"]
        [tenants.b]
        keys = ["{hash_key(KEY_B)}"]
    """
    cfg = config_from(config(fake_openai.base_url, extra=SEMANTIC) + tenants)
    stack = await make_stack(nats_url, cfg, redis_url=redis_server.url)

    async def ask(text: str, key: str) -> str:
        hdrs = {headers.CACHE_NAMESPACE: namespace, headers.AUTHORIZATION: f"Bearer {key}"}
        msg = await stack.nc.request("llm.chat", chat(text), timeout=20, headers=hdrs)
        assert msg.headers is not None
        assert msg.headers[headers.STATUS] == "200", msg.data
        return msg.headers[headers.CACHE]

    assert await ask("What is the boiling point of water at sea level?", KEY_A) == "MISS"
    semantic = _semantic(stack, 0)
    async with semantic.changed:
        await asyncio.wait_for(
            semantic.changed.wait_for(lambda: semantic.index.ids(f"a:{namespace}:")), 10
        )
    reworded = "At sea level, what is the boiling point of water?"
    assert await ask(reworded, KEY_B) == "MISS"
    assert await ask("What's the boiling point of water at sea level?", KEY_A) == ("HIT-SEMANTIC")
