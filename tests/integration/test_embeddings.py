"""Embeddings through the real path: the official SDK and raw HTTP against the bridge, a
broker, workers and a fake OpenAI upstream on loopback (or the mock provider), on a real
nats-server with the NATS KV L2."""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import io
import json
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import openai
import pytest
from prometheus_client import REGISTRY

from broker.cache.vectors import vector_keys
from broker.config import Config
from broker.tenancy.tenants import hash_key
from schemas import headers
from schemas.jetstream import CACHE_BUCKET
from tests.support.batch import batch_stack, jsonl, wait_final
from tests.support.servers import RedisServer
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted
from workers.mock_vectors import mock_vector, tokens_of

KEY = f"sk-le-test-{uuid.uuid4().hex}"
LIMITED_KEY = f"sk-le-test-{uuid.uuid4().hex}"
SPENDER_KEY = f"sk-le-test-{uuid.uuid4().hex}"
#: A key of tenant acme whose own list holds only the mock model, with its own rpm.
GRANTED_KEY = f"sk-le-test-{uuid.uuid4().hex}"
#: USD per 1M input tokens of the priced model: one token costs $0.001.
PRICE = 1000.0


@pytest.fixture
async def stack(nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory) -> Stack:
    config = config_from(f"""
        [cache]
        l2 = "nats"
        l2_timeout_s = 5  # the per-input semantics, not the budget: 100 keys read on a busy CI

        [batch]
        enabled = false

        [resilience]
        backoff_initial_s = 0.001

        [admission]
        max_wait_s = 0  # over its rpm, a request is refused at once instead of waiting

        [tenants.acme]
        keys = [
          "{hash_key(KEY)}",
          {{ hash = "{hash_key(GRANTED_KEY)}", models = ["mock"], rpm = 2 }},
        ]

        [tenants.metered]
        keys = ["{hash_key(LIMITED_KEY)}"]
        rpm = 2

        [tenants.spender]
        keys = ["{hash_key(SPENDER_KEY)}"]
        budget_usd = 0.000001

        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"

        [providers.up2]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"

        [providers.mock]
        kind = "mock"
        embedding_dimensions = 64

        [providers.claude]
        kind = "anthropic"
        base_url = "http://127.0.0.1:9/v1"

        [models.text]
        aliases = ["text-alias"]
        deployments = [
          {{ provider = "up", model = "text-embedding-3-small", input_price = {PRICE} }},
        ]

        [models.failover]
        strategy = "failover"
        deployments = [
          {{ provider = "up", name = "primary", priority = 0 }},
          {{ provider = "up2", name = "secondary", priority = 1 }},
        ]

        [models.mock]
        deployments = [{{ provider = "mock" }}]

        [models.claude]
        deployments = [{{ provider = "claude", model = "claude-x" }}]
    """)
    return await make_stack(nats_url, config, bridge=True)


def auth(key: str = KEY, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def sdk(stack: Stack, namespace: str) -> openai.AsyncOpenAI:
    """The official SDK, unchanged, against the bridge (its own cache namespace)."""
    return openai.AsyncOpenAI(
        base_url=stack.base_url,
        api_key=KEY,
        max_retries=0,
        default_headers={"X-Cache-Namespace": namespace},
    )


def upstream_vector(text: str, dimensions: int = 1536) -> list[float]:
    """What the fake upstream answers for ``text``."""
    return mock_vector(text, dimensions).tolist()


def embeddings_calls(fake: FakeOpenAI) -> list[list[Any]]:
    """The inputs of every embeddings call the upstream received, in order."""
    return [r.body["input"] for r in fake.received if r.path == "/v1/embeddings"]


async def post(stack: Stack, body: dict[str, Any], **hdrs: str) -> httpx.Response:
    assert stack.http is not None
    return await stack.http.post("/embeddings", json=body, headers=auth(**hdrs))


def inputs_counted(source: str) -> float:
    labels = {"source": source}
    return REGISTRY.get_sample_value("llm_edge_embedding_inputs_total", labels) or 0.0


def keys_of(texts: list[str], namespace: str, tenant: str = "acme") -> list[str]:
    """The cache keys of ``texts`` asked of model ``text`` as floats."""
    return vector_keys(
        texts,
        model="text",
        dimensions=None,
        encoding_format="float",
        extras={},
        namespace=f"{tenant}:{namespace}",
    )


@contextlib.asynccontextmanager
async def written_back(stack: Stack, keys: list[str]) -> AsyncIterator[None]:
    """Around requests whose new vectors are ``keys``: waits (bounded) after them until the
    L2 bucket holds every one (the write-back follows the reply)."""
    kv = await stack.nc.jetstream().key_value(CACHE_BUCKET)
    wanted = {key.replace(":", ".") for key in keys}
    prefix = next(iter(wanted)).rsplit(".", 1)[0]
    watcher = await kv.watch(f"{prefix}.*")
    try:
        yield
        stored: set[str] = set()
        async with asyncio.timeout(10):
            async for entry in watcher:
                if entry is not None and entry.value:
                    stored.add(entry.key)
                    if wanted <= stored:
                        return
    finally:
        await watcher.stop()


async def test_sdk_single_and_batched_inputs(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """client.embeddings.create works unchanged (it asks for base64 by default): one text, then
    several, each answered with its vector in input order and the upstream's usage."""
    client = sdk(stack, namespace)
    one = await client.embeddings.create(model="text", input="hello")
    assert [d.index for d in one.data] == [0]
    assert one.data[0].embedding == upstream_vector("hello")
    assert one.model == "text-embedding-3-small-upstream"
    assert one.usage.prompt_tokens == one.usage.total_tokens == tokens_of("hello")
    sent = fake_openai.received[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.body["model"] == "text-embedding-3-small"
    assert sent.body["encoding_format"] == "base64"
    texts = ["the first text", "a second one", "and a third, somewhat longer, text"]
    many = await client.embeddings.create(model="text", input=texts)
    assert [d.index for d in many.data] == [0, 1, 2]
    assert [d.embedding for d in many.data] == [upstream_vector(t) for t in texts]
    assert many.usage.prompt_tokens == sum(tokens_of(t) for t in texts)
    assert embeddings_calls(fake_openai) == ["hello", texts]


async def test_base64_round_trip_equals_float(stack: Stack, namespace: str) -> None:
    """The same inputs asked for as floats and as base64 decode to the same vectors, through
    the SDK and over raw HTTP (little-endian float32 in base64, as OpenAI sends it)."""
    client = sdk(stack, namespace)
    texts = ["alpha", "beta"]
    floats = await client.embeddings.create(model="text", input=texts, encoding_format="float")
    decoded = await client.embeddings.create(model="text", input=texts)  # base64, decoded
    assert [d.embedding for d in decoded.data] == [d.embedding for d in floats.data]
    body = {"model": "text", "input": texts, "encoding_format": "base64"}
    raw = await post(stack, body, **{"X-Cache-Namespace": namespace})
    assert raw.status_code == 200
    for item, expected in zip(raw.json()["data"], floats.data, strict=True):
        assert isinstance(item["embedding"], str)
        vector = array.array("f", base64.b64decode(item["embedding"]))
        assert vector.tolist() == expected.embedding


async def test_cache_answers_per_input(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """100 inputs of which 90 were seen call the upstream with the 10 unseen ones only, and the
    answer holds all 100 in the caller's order with the whole request's usage; the same
    request again is answered from L1, and from L2 once L1 has lost the vectors."""
    seen = [f"known text {i}" for i in range(90)]
    new = [f"new text {i}" for i in range(10)]
    asked = [*seen[:45], *new[:5], *seen[45:], *new[5:]]
    ns = {"X-Cache-Namespace": namespace}
    async with written_back(stack, keys_of(seen, namespace)):
        first = await post(stack, {"model": "text", "input": seen}, **ns)
    assert first.status_code == 200
    assert first.headers["x-cache"] == "MISS"
    assert first.headers["llm-cached-inputs"] == "0"
    upstream_before, l1_before = inputs_counted("upstream"), inputs_counted("l1")

    async with written_back(stack, keys_of(new, namespace)):
        mixed = await post(stack, {"model": "text", "input": asked}, **ns)
    assert mixed.status_code == 200
    assert embeddings_calls(fake_openai)[-1] == new
    assert (mixed.headers["x-cache"], mixed.headers["llm-cached-inputs"]) == ("MISS", "90")
    answer = mixed.json()
    assert [d["index"] for d in answer["data"]] == list(range(100))
    assert [d["embedding"] for d in answer["data"]] == [upstream_vector(t) for t in asked]
    assert answer["usage"]["prompt_tokens"] == sum(tokens_of(t) for t in asked)
    assert inputs_counted("upstream") == upstream_before + 10
    assert inputs_counted("l1") == l1_before + 90

    calls = len(embeddings_calls(fake_openai))
    again = await post(stack, {"model": "text", "input": asked}, **ns)
    assert (again.headers["x-cache"], again.headers["llm-cached-inputs"]) == ("HIT-L1", "100")
    assert again.json() == answer
    broker = stack.brokers[0]
    assert broker.cache is not None
    broker.cache.vectors.l1.purge("")
    shared = await post(stack, {"model": "text", "input": asked}, **ns)
    assert (shared.headers["x-cache"], shared.headers["llm-cached-inputs"]) == ("HIT-L2", "100")
    assert shared.json() == answer
    assert len(embeddings_calls(fake_openai)) == calls


async def test_cache_key_covers_model_dimensions_and_format(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """A vector is reused only for the same model (aliases included), dimensions and encoding
    format: each other combination calls the upstream."""
    ns = {"X-Cache-Namespace": namespace}
    bodies: list[dict[str, Any]] = [
        {"model": "text", "input": "same text"},
        {"model": "text", "input": "same text", "encoding_format": "base64"},
        {"model": "text", "input": "same text", "dimensions": 256},
        {"model": "failover", "input": "same text"},
    ]
    for body in bodies:
        reply = await post(stack, body, **ns)
        assert reply.headers["x-cache"] == "MISS", body
    assert len(embeddings_calls(fake_openai)) == 4
    short = (await post(stack, bodies[2], **ns)).json()["data"][0]["embedding"]
    assert len(short) == 256
    for body in (
        {"model": "text-alias", "input": "same text"},
        {"model": "text", "input": "same text", "encoding_format": "float"},
    ):
        reply = await post(stack, body, **ns)
        assert reply.headers["x-cache"] == "HIT-L1", body
    assert len(embeddings_calls(fake_openai)) == 4


async def test_repeated_inputs_go_upstream_once(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """An input repeated within a request is sent upstream once and answered at each place."""
    ns = {"X-Cache-Namespace": namespace}
    reply = await post(stack, {"model": "text", "input": ["x", "y", "x"]}, **ns)
    assert reply.status_code == 200
    assert embeddings_calls(fake_openai)[-1] == ["x", "y"]
    data = reply.json()["data"]
    assert data[0]["embedding"] == data[2]["embedding"] == upstream_vector("x")
    assert reply.json()["usage"]["prompt_tokens"] == 3 * tokens_of("x")


async def test_token_arrays_are_embedded(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """One token array and several are accepted, sent upstream as token arrays, and never
    share a cache entry with a text."""
    ns = {"X-Cache-Namespace": namespace}
    one = await post(stack, {"model": "text", "input": [1, 2, 3]}, **ns)
    assert one.status_code == 200
    assert embeddings_calls(fake_openai)[-1] == [1, 2, 3]
    assert one.json()["data"][0]["embedding"] == mock_vector([1, 2, 3], 1536).tolist()
    many = await post(stack, {"model": "text", "input": [[1, 2, 3], [4, 5]]}, **ns)
    assert many.headers["llm-cached-inputs"] == "1"
    assert embeddings_calls(fake_openai)[-1] == [[4, 5]]
    text = await post(stack, {"model": "text", "input": "[1, 2, 3]"}, **ns)
    assert text.headers["x-cache"] == "MISS"


async def test_mock_vectors_are_deterministic_unit_vectors(stack: Stack) -> None:
    """The mock answers the same unit vector for the same input every time, of its configured
    dimensions (64 here) or the request's; a shorter one is the longer one's start, scaled."""
    body = {"model": "mock", "input": ["a text", "another"]}
    first = await post(stack, body, **{"Cache-Control": "no-cache, no-store"})
    second = await post(stack, body, **{"Cache-Control": "no-cache, no-store"})
    assert first.headers["x-cache"] == second.headers["x-cache"] == "BYPASS"
    vectors = [d["embedding"] for d in first.json()["data"]]
    assert vectors == [d["embedding"] for d in second.json()["data"]]
    assert vectors[0] != vectors[1]
    for vector in vectors:
        assert len(vector) == 64
        assert math.fsum(v * v for v in vector) == pytest.approx(1.0, abs=1e-6)
    short = await post(stack, {"model": "mock", "input": "a text", "dimensions": 16})
    head = vectors[0][:16]
    norm = math.sqrt(math.fsum(v * v for v in head))
    assert short.json()["data"][0]["embedding"] == pytest.approx([v / norm for v in head], abs=1e-6)


async def test_failover_to_another_deployment(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """A failing deployment's call is retried on the model's next one, as for chat."""
    fake_openai.script.append(
        Scripted(status=500, body={"error": {"message": "boom", "type": "server_error"}})
    )
    reply = await post(
        stack, {"model": "failover", "input": "retry me"}, **{"X-Cache-Namespace": namespace}
    )
    assert reply.status_code == 200
    assert reply.headers["llm-attempts"] == "2"
    assert reply.headers["llm-deployment"] == "secondary"
    assert embeddings_calls(fake_openai) == ["retry me", "retry me"]
    assert reply.json()["data"][0]["embedding"] == upstream_vector("retry me")


async def test_a_repeated_request_id_is_answered_once(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """The same X-Request-Id sent again is answered from its first attempt: the upstream is
    called once (the cache is not read here, so only the request id can tell)."""
    hdrs = {"X-Request-Id": f"emb-{uuid.uuid4().hex}", "Cache-Control": "no-cache"}
    first = await post(stack, {"model": "text", "input": "only once"}, **hdrs)
    second = await post(stack, {"model": "text", "input": "only once"}, **hdrs)
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert embeddings_calls(fake_openai) == ["only once"]


async def test_cost_is_priced_per_input_token(stack: Stack, namespace: str) -> None:
    """An answer costs its upstream tokens at the deployment's input price; an answer from the
    cache costs nothing and says what it saved."""
    text = "twelve characters of text, more or less"
    ns = {"X-Cache-Namespace": namespace}
    fresh = await post(stack, {"model": "text", "input": text}, **ns)
    tokens = fresh.json()["usage"]["prompt_tokens"]
    assert float(fresh.headers["llm-cost-usd"]) == pytest.approx(tokens * PRICE / 1e6)
    hit = await post(stack, {"model": "text", "input": text}, **ns)
    assert "llm-cost-usd" not in hit.headers
    assert float(hit.headers["llm-cost-saved-usd"]) == pytest.approx(tokens * PRICE / 1e6)


async def test_rate_limits_and_budgets_apply(stack: Stack) -> None:
    """A tenant's rpm and budget hold for embeddings as for chat: 429, then 402."""
    body = {"model": "text", "input": "limited"}
    statuses = [(await post(stack, body, key=LIMITED_KEY)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    spent = await post(stack, {"model": "text", "input": "costly"}, key=SPENDER_KEY)
    assert spent.status_code == 200
    refused = await post(stack, {"model": "text", "input": "costly"}, key=SPENDER_KEY)
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "budget_exceeded"


async def test_a_key_outside_its_model_list_is_refused_with_403(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """A key whose own list leaves out the embeddings model is a 403 ``model_not_allowed``
    naming it, over HTTP (raw and through the SDK) and NATS, and nothing reaches the upstream;
    the model its list holds is served, and its own rpm (2) counts embeddings under its
    tenant's (a refused request is not counted)."""
    before = len(embeddings_calls(fake_openai))
    refused = await post(stack, {"model": "text", "input": "not mine"}, key=GRANTED_KEY)
    error = refused.json()["error"]
    assert (refused.status_code, error["code"], error["param"]) == (
        403,
        "model_not_allowed",
        "model",
    )
    assert "`text`" in error["message"]
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key=GRANTED_KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await client.embeddings.create(model="text-alias", input="not mine either")
    assert denied.value.code == "model_not_allowed"
    over_nats = await stack.nc.request(
        "llm.embeddings",
        msgspec.json.encode({"model": "text", "input": "not over nats"}),
        timeout=10,
        headers=auth(GRANTED_KEY),
    )
    assert (over_nats.headers or {})[headers.STATUS] == "403"
    assert len(embeddings_calls(fake_openai)) == before
    allowed = await client.embeddings.create(model="mock", input=["mine", "also mine"])
    assert [d.index for d in allowed.data] == [0, 1]
    second = await post(stack, {"model": "mock", "input": "the second"}, key=GRANTED_KEY)
    assert second.status_code == 200
    third = await post(stack, {"model": "mock", "input": "one too many"}, key=GRANTED_KEY)
    assert (third.status_code, third.json()["error"]["code"]) == (429, "rate_limit_exceeded")
    assert "this key's" in third.json()["error"]["message"]
    assert (await post(stack, {"model": "mock", "input": "the tenant's"})).status_code == 200


async def test_errors_are_openai_envelopes(stack: Stack, fake_openai: FakeOpenAI) -> None:
    """A model no embeddings provider serves is a 400 naming `model`; an upstream's refusal
    keeps its message; an answer that is not one vector per input is a 502."""
    claude = await post(stack, {"model": "claude", "input": "x"})
    assert claude.status_code == 400
    assert claude.json()["error"]["param"] == "model"
    unknown = await post(stack, {"model": "nope", "input": "x"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found")
    fake_openai.script.append(
        Scripted(status=400, body={"error": {"message": "too many tokens", "type": "x"}})
    )
    refused = await post(stack, {"model": "text", "input": "refused upstream"})
    assert refused.status_code == 400
    assert "too many tokens" in refused.json()["error"]["message"]
    short = {"object": "list", "data": [], "model": "m", "usage": {"prompt_tokens": 1}}
    fake_openai.script.extend([Scripted(body=short), Scripted(body=short), Scripted(body=short)])
    broken = await post(stack, {"model": "text", "input": ["one", "two"]})
    assert broken.status_code == 502
    assert broken.json()["error"]["code"] == "invalid_response"


async def test_nats_subject_answers_like_http(stack: Stack) -> None:
    """llm.embeddings answers over NATS with Llm-Status and the same body as the bridge."""
    body = {"model": "text", "input": ["over", "nats"]}
    msg = await stack.nc.request(
        "llm.embeddings", msgspec.json.encode(body), timeout=10, headers=auth()
    )
    assert (msg.headers or {})[headers.STATUS] == "200"
    over_http = await post(stack, body)
    assert msgspec.json.decode(msg.data) == over_http.json()
    refused = await stack.nc.request("llm.embeddings", b"{}", timeout=10, headers=auth())
    assert (refused.headers or {})[headers.STATUS] == "400"


async def test_batch_of_embeddings_lines(nats_url: str, make_stack: StackFactory) -> None:
    """A batch whose endpoint is /v1/embeddings runs its lines through the embeddings path:
    each output line holds that line's embeddings list; a bad line fails alone."""
    config = config_from("""
        [cache]
        l2 = "off"
        [batch]
        poll_s = 0.1
        [providers.mock]
        kind = "mock"
        embedding_dimensions = 8
        [models.mock]
        deployments = [{ provider = "mock" }]
    """)
    stack = await batch_stack(make_stack, nats_url, config)
    rows = [
        {
            "custom_id": f"emb-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "mock", "input": [f"line {i}", "shared"]},
        }
        for i in range(5)
    ]
    rows.append({**rows[0], "custom_id": "bad", "body": {"model": "mock", "input": []}})
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    uploaded = await client.files.create(
        file=("emb.jsonl", io.BytesIO(jsonl(rows))), purpose="batch"
    )
    batch = await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    assert batch.endpoint == "/v1/embeddings"
    await wait_final(stack.nc, batch.id)
    done = await client.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (5, 1)
    assert done.output_file_id is not None
    assert done.error_file_id is not None
    output = (await client.files.content(done.output_file_id)).text.splitlines()
    out = {line["custom_id"]: line["response"] for line in map(json.loads, output)}
    for i in range(5):
        answer = out[f"emb-{i}"]
        assert answer["status_code"] == 200
        vectors = [d["embedding"] for d in answer["body"]["data"]]
        assert vectors == [mock_vector(f"line {i}", 8).tolist(), mock_vector("shared", 8).tolist()]
    errors = (await client.files.content(done.error_file_id)).text.splitlines()
    failed = json.loads(errors[0])
    assert failed["custom_id"] == "bad"
    assert failed["response"]["status_code"] == 400
    assert failed["response"]["body"]["error"]["param"] == "input"


async def test_the_built_in_models_answer_the_sdk(nats_url: str, make_stack: StackFactory) -> None:
    """With the built-in configuration and no key, OpenAI's embedding model names are served
    by the mock: the SDK's call as written in OpenAI's documentation works."""
    config, mocked = Config.load().with_mock_fallback({})
    assert {"text-embedding-3-small", "text-embedding-3-large"} <= set(mocked)
    stack = await make_stack(nats_url, config, providers=["mock"], bridge=True)
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    reply = await client.embeddings.create(
        model="text-embedding-3-small", input="The food was delicious and the waiter..."
    )
    assert len(reply.data[0].embedding) == 1536
    assert reply.usage.prompt_tokens > 0


async def test_a_namespace_purge_removes_its_vectors(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """llm.admin.cache.purge of a namespace removes its vectors from L1 and L2: the next
    request for them calls the upstream again."""
    ns = {"X-Cache-Namespace": namespace}
    texts = ["to be purged", "and this"]
    body = {"model": "text", "input": texts}
    async with written_back(stack, keys_of(texts, namespace)):
        assert (await post(stack, body, **ns)).headers["x-cache"] == "MISS"
    assert (await post(stack, body, **ns)).headers["x-cache"] == "HIT-L1"
    purge = {"namespace": namespace, "tenant": "acme"}
    answer = await stack.nc.request("llm.admin.cache.purge", msgspec.json.encode(purge), timeout=10)
    assert (answer.headers or {})[headers.STATUS] == "200"
    assert msgspec.json.decode(answer.data)["purged"]["l1"] == 2
    again = await post(stack, body, **ns)
    assert (again.headers["x-cache"], again.headers["llm-cached-inputs"]) == ("MISS", "0")
    assert len(embeddings_calls(fake_openai)) == 2


async def test_idempotent_attempts_on_two_brokers_share_one_upstream_call(
    nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory
) -> None:
    """Two attempts of one idempotent request (Llm-Idempotent: 1, one X-Request-Id) handled
    by two different brokers are answered from one upstream call (the workers' claim)."""
    from broker.batch.runner import CollectSink

    config = config_from(f"""
        [cache]
        l2 = "off"
        [batch]
        enabled = false
        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        [models.text]
        deployments = [{{ provider = "up" }}]
    """)
    stack = await make_stack(nats_url, config, brokers=2)
    body = msgspec.json.encode({"model": "text", "input": ["once", "only"]})
    hdrs = {
        headers.REQUEST_ID: f"emb-{uuid.uuid4().hex}",
        headers.IDEMPOTENT: "1",
        headers.CACHE_CONTROL: "no-cache",
    }
    answers = []
    for broker in stack.brokers:
        assert broker.embeddings is not None
        sink = CollectSink()
        await broker.embeddings.handle(body, dict(hdrs), sink)
        answers.append(await asyncio.wait_for(sink.reply, 10))
    assert [a.status for a in answers] == [200, 200]
    assert answers[0].body == answers[1].body
    assert embeddings_calls(fake_openai) == [["once", "only"]]


async def test_vectors_are_shared_through_redis(
    nats_url: str, fake_openai: FakeOpenAI, redis_server: RedisServer, make_stack: StackFactory
) -> None:
    """With Redis as L2, vectors are written with one pipeline and read with one MGET: a
    broker that has lost them from L1 is answered from Redis, the upstream not called."""
    config = config_from(f"""
        [cache]
        l2 = "redis"
        [batch]
        enabled = false
        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        [models.text]
        deployments = [{{ provider = "up" }}]
    """)
    stack = await make_stack(nats_url, config, redis_url=redis_server.url)
    broker = stack.brokers[0]
    assert broker.cache is not None
    assert broker.embeddings is not None
    body = msgspec.json.encode({"model": "text", "input": [f"redis {uuid.uuid4()}", "two"]})
    ns = {headers.CACHE_NAMESPACE: f"r{uuid.uuid4().hex[:8]}"}
    first = await stack.nc.request("llm.embeddings", body, timeout=10, headers=ns)
    assert (first.headers or {})[headers.CACHE] == "MISS"
    await broker.embeddings.drain(5)  # the write-back to Redis runs after the reply
    broker.cache.vectors.l1.purge("")
    again = await stack.nc.request("llm.embeddings", body, timeout=10, headers=ns)
    assert (again.headers or {})[headers.CACHE] == "HIT-L2"
    assert again.data == first.data
    assert len(embeddings_calls(fake_openai)) == 1


async def test_the_python_client_embeds_over_nats(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """``EdgeClient.embeddings`` answers the OpenAI list from ``llm.embeddings``, each input
    cached on its own: a second call with one new input sends only that one upstream."""
    from edge_client import EdgeClient

    async with EdgeClient(stack.nc, api_key=KEY, namespace=namespace) as client:
        async with written_back(stack, keys_of(["p", "q"], namespace)):
            first = await client.embeddings({"model": "text", "input": ["p", "q"]})
        again = await client.embeddings({"model": "text", "input": ["q", "r"]})
    assert [d["embedding"] for d in first["data"]] == [upstream_vector("p"), upstream_vector("q")]
    assert [d["index"] for d in again["data"]] == [0, 1]
    assert again["data"][1]["embedding"] == upstream_vector("r")
    assert embeddings_calls(fake_openai)[-1] == ["r"]
