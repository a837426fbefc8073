"""Bearer JWTs through the real path: a real nats-server, the broker, the mock worker, the HTTP
bridge and the official SDK as callers; the issuer's JWKS served by a local HTTP server this
test runs (and rotates), its key pairs generated here."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import openai
import pytest
from nats.aio.msg import Msg

from broker.tenancy.tenants import hash_key
from schemas import headers, subjects
from tests.support.issuer import AUDIENCE, ISSUER, Issuer, unsigned
from tests.support.servers import free_port
from tests.support.stack import Stack, StackFactory, chat, config_from

API_KEY = f"sk-le-test-{uuid.uuid4().hex}"


def jwt_config(jwks_url: str, min_refresh_s: float = 0) -> str:
    """Tenants acme (rpm 100) and ops (admin), one plain API key, the issuer at
    ``jwks_url``; three mock models."""
    return f"""
        [cache]
        l2 = "off"
        [batch]
        enabled = false
        [auth.jwt]
        issuer = "{ISSUER}"
        audience = ["{AUDIENCE}", "another-audience"]
        jwks_url = "{jwks_url}"
        jwks_min_refresh_s = {min_refresh_s}
        jwks_timeout_s = 2
        leeway_s = 5
        [admission]
        max_wait_s = 0  # over a limit, a request is refused at once instead of waiting
        [tenants.acme]
        keys = ["{hash_key(API_KEY)}"]
        rpm = 100
        [tenants.ops]
        admin = true
        [providers.mock]
        kind = "mock"
        [models.mock]
        deployments = [{{ provider = "mock" }}]
        [models.mock-fast]
        deployments = [{{ provider = "mock" }}]
        [models.other]
        deployments = [{{ provider = "mock" }}]
    """


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    """An issuer with RSA key k1 and EC key e1 published, serving its JWKS."""
    server = Issuer()
    server.new_key("k1")
    server.new_key("e1", "EC")
    server.publish("k1", "e1")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def stack(nats_url: str, issuer: Issuer, make_stack: StackFactory) -> Stack:
    return await make_stack(nats_url, config_from(jwt_config(issuer.url)), bridge=True)


async def ask(stack: Stack, token: str | None, model: str = "mock") -> Msg:
    hdrs = {headers.AUTHORIZATION: f"Bearer {token}"} if token else None
    body = chat(f"jwt {uuid.uuid4().hex}", model=model)
    return await stack.nc.request(subjects.CHAT, body, timeout=10, headers=hdrs)


def outcome(msg: Msg) -> tuple[int, str]:
    """The reply's status and error code (empty for a success)."""
    body = msgspec.json.decode(msg.data)
    return int((msg.headers or {})[headers.STATUS]), body.get("error", {}).get("code", "")


def message(msg: Msg) -> str:
    return str(msgspec.json.decode(msg.data)["error"]["message"])


def sdk(stack: Stack, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.base_url, api_key=token, max_retries=0)


async def test_a_valid_token_is_served_as_its_tenant_over_nats_and_http(
    stack: Stack, issuer: Issuer
) -> None:
    """An RS256 and an ES256 token of the issuer are served, as the tenant their claim names
    (the cache key is that tenant's), over NATS and through the official SDK."""
    for kid in ("k1", "e1"):
        reply = await ask(stack, issuer.token(kid))
        assert outcome(reply) == (200, "")
        assert (reply.headers or {})[headers.CACHE_KEY].startswith("acme:")
    answer = await sdk(stack, issuer.token("k1")).chat.completions.create(
        model="mock", messages=[{"role": "user", "content": "hello over http"}]
    )
    assert answer.choices[0].message.content
    plain = await ask(stack, API_KEY)  # the API key still works beside tokens
    assert outcome(plain) == (200, "")


async def test_the_issuer_rotates_its_key_mid_run(stack: Stack, issuer: Issuer) -> None:
    """A token signed by a key published after start is accepted (the broker fetches the new
    JWKS once); after the old key is withdrawn, its tokens are refused."""
    old = issuer.token("k1")
    assert outcome(await ask(stack, old)) == (200, "")
    fetched = issuer.fetches
    issuer.new_key("k2")
    issuer.publish("k2")  # rotation: k1 withdrawn
    new = issuer.token("k2")
    assert outcome(await ask(stack, new)) == (200, "")
    assert issuer.fetches == fetched + 1
    assert outcome(await ask(stack, new)) == (200, "")  # verified once, then cached
    assert issuer.fetches == fetched + 1
    refused = await ask(stack, old)
    assert outcome(refused) == (401, "invalid_token")
    assert "'k1', which the issuer does not publish" in message(refused)


def forged(issuer: Issuer) -> dict[str, tuple[str, str]]:
    """Tokens that must be refused, with the words their refusal carries."""
    good = issuer.token("k1")
    head, body, signature = good.split(".")
    flipped = ("A" if signature[10] != "A" else "B").join((signature[:10], signature[11:]))
    return {
        "expired": (issuer.token("k1", exp=int(time.time()) - 60), "expired"),
        "not-yet-valid": (issuer.token("k1", nbf=int(time.time()) + 600), "`nbf`"),
        "wrong-audience": (issuer.token("k1", aud="someone-else"), "`aud`"),
        "wrong-issuer": (issuer.token("k1", iss="https://evil.test/"), "`iss`"),
        "alg-none": (unsigned({"alg": "none", "typ": "JWT"}, issuer.claims()), "'none'"),
        "hs256-with-public-key": (issuer.hmac_forgery("k1"), "'HS256'"),
        "tampered-signature": (f"{head}.{body}.{flipped}", "signature"),
        "tampered-claims": (
            f"{head}.{unsigned({}, issuer.claims(tenant='ops')).split('.')[1]}.{signature}",
            "signature",
        ),
        "no-exp": (issuer.token("k1", exp=None), "exp"),
        "no-tenant": (issuer.token("k1", tenant=None), "`tenant`"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "not-yet-valid",
        "wrong-audience",
        "wrong-issuer",
        "alg-none",
        "hs256-with-public-key",
        "tampered-signature",
        "tampered-claims",
        "no-exp",
        "no-tenant",
    ],
)
async def test_a_bad_token_is_a_401_naming_the_check(
    stack: Stack, issuer: Issuer, case: str
) -> None:
    """Each forged or out-of-date token is a 401 ``invalid_token`` over NATS and HTTP whose
    message names the check it failed; nothing reaches a provider."""
    token, words = forged(issuer)[case]
    reply = await ask(stack, token)
    assert outcome(reply) == (401, "invalid_token")
    assert words in message(reply)
    with pytest.raises(openai.AuthenticationError) as refused:
        await sdk(stack, token).chat.completions.create(
            model="mock", messages=[{"role": "user", "content": "forged"}]
        )
    assert refused.value.code == "invalid_token"


async def test_claims_map_to_tenant_admin_role_and_models(stack: Stack, issuer: Issuer) -> None:
    """The models claim narrows what the token may ask for (403 ``model_not_allowed``
    naming the model, over NATS and HTTP; /v1/models lists only those); a tenant the
    configuration lacks is a 403; the admin role opens the console."""
    token = issuer.token("k1", models=["mock-*"])
    assert outcome(await ask(stack, token, "mock-fast")) == (200, "")
    refused = await ask(stack, token, "other")
    assert outcome(refused) == (403, "model_not_allowed")
    assert "`other`" in message(refused)
    client = sdk(stack, token)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await client.chat.completions.create(
            model="mock", messages=[{"role": "user", "content": "not mine"}]
        )
    assert denied.value.code == "model_not_allowed"
    assert "`mock`" in str(denied.value)
    assert [m.id async for m in client.models.list()] == ["mock-fast"]
    stranger = await ask(stack, issuer.token("k1", tenant="stranger"))
    assert outcome(stranger) == (403, "forbidden")
    assert stack.http is not None
    console = f"http://127.0.0.1:{stack.bridge.port}/console/api/state"  # type: ignore[union-attr]
    admin = issuer.token("e1", tenant="acme", roles=["reader", "llm-edge-admin"])
    for bearer, status in ((issuer.token("k1"), 403), (admin, 200)):
        seen = await stack.http.get(console, headers={"Authorization": f"Bearer {bearer}"})
        assert seen.status_code == status, seen.text


async def test_limits_claim_is_counted_per_subject_under_the_tenant(
    stack: Stack, issuer: Issuer
) -> None:
    """A token's own rpm is counted per ``sub``: its third request in the minute is a 429
    naming the key's limit, while another subject of the same tenant is still served."""
    limits = {"rpm": 2}
    sub = f"svc-{uuid.uuid4().hex[:8]}"
    token = issuer.token("k1", sub=sub, llm_edge_limits=limits)
    replies = [await ask(stack, token) for _ in range(3)]
    assert [outcome(r) for r in replies] == [(200, ""), (200, ""), (429, "rate_limit_exceeded")]
    assert "this key's limits" in message(replies[2])
    assert (replies[2].headers or {})["x-ratelimit-limit-requests"] == "2"
    other = issuer.token("k1", sub=f"{sub}-other", llm_edge_limits=limits)
    assert outcome(await ask(stack, other)) == (200, "")


async def test_made_up_key_ids_do_not_hammer_the_issuer(
    nats_url: str, issuer: Issuer, make_stack: StackFactory
) -> None:
    """Tokens naming kids the issuer never published are 401s, and cause at most one JWKS
    fetch per ``jwks_min_refresh_s`` (here 60 s: none after the first)."""
    stack = await make_stack(nats_url, config_from(jwt_config(issuer.url, min_refresh_s=60)))
    assert outcome(await ask(stack, issuer.token("k1"))) == (200, "")
    fetched = issuer.fetches
    for i in range(20):
        token = unsigned({"alg": "RS256", "kid": f"made-up-{i}"}, issuer.claims(), b"x" * 256)
        assert outcome(await ask(stack, token)) == (401, "invalid_token")
    assert issuer.fetches - fetched <= 1


async def test_an_unreachable_issuer_fails_closed_then_heals(
    nats_url: str, make_stack: StackFactory
) -> None:
    """With the JWKS URL down at start, a token is refused with 503 ``keys_unavailable`` and
    ``Retry-After`` (never served unverified) while API keys are served; once the issuer
    answers, the same token is served."""
    late = Issuer(port=free_port())
    late.new_key("k1")
    late.publish("k1")
    stack = await make_stack(nats_url, config_from(jwt_config(late.url)))
    token = late.token("k1")
    refused = await ask(stack, token)
    assert outcome(refused) == (503, "keys_unavailable")
    assert (refused.headers or {})[headers.RETRY_AFTER] == "5"
    assert outcome(await ask(stack, API_KEY)) == (200, "")
    await late.start()
    try:
        assert outcome(await ask(stack, token)) == (200, "")
    finally:
        await late.stop()


async def test_a_plain_api_key_never_touches_the_jwt_path(stack: Stack, issuer: Issuer) -> None:
    """API keys (and bearer values not shaped like a JWT) are looked up as keys: a wrong one
    is the key's 401, and no JWKS fetch happens for any of them."""
    fetched = issuer.fetches
    assert outcome(await ask(stack, API_KEY)) == (200, "")
    wrong: dict[str, Any] = {"sk-le-wrong": 401, "eyJ-not.a-token": 401}
    for value, status in wrong.items():
        assert outcome(await ask(stack, value)) == (status, "invalid_api_key")
    assert issuer.fetches == fetched


async def test_a_slow_key_fetch_holds_up_no_other_request(stack: Stack, issuer: Issuer) -> None:
    """While a token's new key is being fetched from a slow issuer, other requests (API keys,
    tokens of known keys) are answered; the token is served once the JWKS arrives."""
    issuer.new_key("k3")
    issuer.publish("k1", "e1", "k3")
    issuer.asked.clear()
    issuer.hold = asyncio.Event()
    waiting = asyncio.ensure_future(ask(stack, issuer.token("k3")))
    try:
        await asyncio.wait_for(issuer.asked.wait(), 10)
        assert outcome(await ask(stack, API_KEY)) == (200, "")
        assert outcome(await ask(stack, issuer.token("e1"))) == (200, "")
        assert not waiting.done()
    finally:
        issuer.hold.set()
    assert outcome(await asyncio.wait_for(waiting, 10)) == (200, "")


async def test_embeddings_take_tokens_as_chat_does(stack: Stack, issuer: Issuer) -> None:
    """/v1/embeddings and llm.embeddings serve a token as its tenant, one signed by a key the
    broker must fetch first included (fetched once, off the subscription's callback), and
    hold it to its models claim: a model outside it is a 403 ``model_not_allowed`` naming it;
    a forged token is a 401."""
    issuer.new_key("k4")
    issuer.publish("k1", "e1", "k4")
    fetched = issuer.fetches
    token = issuer.token("k4", models=["mock-*"])
    client = sdk(stack, token)
    answer = await client.embeddings.create(model="mock-fast", input=["first", "second"])
    assert [d.index for d in answer.data] == [0, 1]
    assert issuer.fetches == fetched + 1
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await client.embeddings.create(model="other", input="not mine")
    assert denied.value.code == "model_not_allowed"
    assert "`other`" in str(denied.value)
    body = msgspec.json.encode({"model": "mock", "input": "over nats"})
    hdrs = {headers.AUTHORIZATION: f"Bearer {token}"}
    refused = await stack.nc.request(subjects.EMBEDDINGS, body, timeout=10, headers=hdrs)
    assert outcome(refused) == (403, "model_not_allowed")
    served = await stack.nc.request(
        subjects.EMBEDDINGS,
        body,
        timeout=10,
        headers={headers.AUTHORIZATION: f"Bearer {issuer.token('e1')}"},
    )
    assert outcome(served) == (200, "")
    forged_token = forged(issuer)["tampered-signature"][0]
    with pytest.raises(openai.AuthenticationError) as unsigned_in:
        await sdk(stack, forged_token).embeddings.create(model="mock", input="forged")
    assert unsigned_in.value.code == "invalid_token"
