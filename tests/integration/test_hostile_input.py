"""Invalid and hostile input through the real paths (NATS and the HTTP bridge): every one is
answered with a 400 envelope naming the field (a 401 for a hostile bearer token), and nothing
is forwarded or stored."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from broker.tenancy.tenants import hash_key
from schemas import headers
from tests.support.issuer import AUDIENCE, ISSUER, Issuer, unsigned
from tests.support.stack import Stack, StackFactory, config_from

KEY = f"sk-le-test-{uuid.uuid4().hex}"
AUTH = {headers.AUTHORIZATION: f"Bearer {KEY}"}
#: Deeper than any JSON decoder's recursion guard: arrays, and objects.
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


@pytest.fixture
async def stack(nats_url: str, make_stack: StackFactory) -> Stack:
    config = config_from(f"""
        [cache]
        l2 = "off"
        [tenants.acme]
        keys = ["{hash_key(KEY)}"]
        [providers.mock]
        kind = "mock"
        [models.mock]
        deployments = [{{ provider = "mock" }}]
    """)
    return await make_stack(nats_url, config, bridge=True)


def chat(**extra: Any) -> bytes:
    return msgspec.json.encode(
        {"model": "mock", "messages": [{"role": "user", "content": "hi"}], **extra}
    )


def messages(**extra: Any) -> bytes:
    return msgspec.json.encode(
        {"model": "mock", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]} | extra
    )


def embeddings(**fields: Any) -> bytes:
    return msgspec.json.encode({"model": "mock", "input": "hi"} | fields)


def with_raw_field(body: bytes, name: str, raw: bytes) -> bytes:
    """The body with one more top-level field holding ``raw`` JSON, as written."""
    return body[:-1] + b',"' + name.encode() + b'":' + raw + b"}"


async def ask(stack: Stack, subject: str, body: bytes, hdrs: dict[str, str] | None = None) -> Msg:
    return await stack.nc.request(subject, body, timeout=10, headers=AUTH if hdrs is None else hdrs)


def status(msg: Msg) -> int:
    return int((msg.headers or {})[headers.STATUS])


def openai_error(data: bytes) -> dict[str, Any]:
    error: dict[str, Any] = msgspec.json.decode(data)["error"]
    return error


def anthropic_error(data: bytes) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.json.decode(data)
    assert body["type"] == "error"
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(stop=[f"s{i}" for i in range(1000)]), "stop"),
        (chat(max_tokens=10**30), "max_tokens"),
        (chat(max_completion_tokens=10**30), "max_completion_tokens"),
        (chat(max_tokens=0), "max_tokens"),
        (with_raw_field(chat(), "vendor_knob", b"1e400"), "vendor_knob"),
        (with_raw_field(chat(), "vendor_knob", b"9" * 5000), "vendor_knob"),
    ],
    ids=[
        "1000-stops",
        "huge-max-tokens",
        "huge-max-completion",
        "zero-max",
        "1e400",
        "5000-digits",
    ],
)
async def test_chat_values_out_of_range_are_400s_naming_the_field(
    stack: Stack, body: bytes, param: str
) -> None:
    """Out-of-range values on llm.chat and POST /v1/chat/completions are 400s naming the field."""
    reply = await ask(stack, "llm.chat", body)
    assert status(reply) == 400
    assert openai_error(reply.data)["param"] == param
    assert stack.http is not None
    response = await stack.http.post("/chat/completions", content=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (embeddings(input=""), "input"),
        (embeddings(input=[]), "input"),
        (embeddings(input=["ok", ""]), "input[1]"),
        (embeddings(input=["x"] * 2049), "input"),
        (embeddings(input=["text", 5]), "input[1]"),
        (embeddings(input=[1, "text"]), "input[1]"),
        (embeddings(input=[[1, 2], []]), "input[1]"),
        (embeddings(input=[1, -2]), "input[1]"),
        (embeddings(input=[[1, 2**40]]), "input[0][1]"),
        (with_raw_field(b'{"model":"mock"}', "input", b"[" + b"9" * 5000 + b"]"), "input[0]"),
        (embeddings(input=[1.5]), "input[0]"),
        (embeddings(input=[True]), "input[0]"),
        (embeddings(input=5), "input"),
        (embeddings(input={"text": "hi"}), "input"),
        (embeddings(input=None), "input"),
        (msgspec.json.encode({"model": "mock"}), "input"),
        (msgspec.json.encode({"input": "hi"}), "model"),
        (embeddings(model=""), "model"),
        (embeddings(model=["mock"]), "model"),
        (embeddings(dimensions=0), "dimensions"),
        (embeddings(dimensions=10**9), "dimensions"),
        (embeddings(dimensions="64"), "dimensions"),
        (embeddings(encoding_format="hex"), "encoding_format"),
        (embeddings(user=7), "user"),
        (with_raw_field(embeddings(), "input_type", b"1e400"), "input_type"),
    ],
    ids=[
        "empty-text",
        "empty-list",
        "empty-text-in-list",
        "2049-inputs",
        "text-then-number",
        "token-then-text",
        "empty-token-array",
        "negative-token",
        "huge-token",
        "5000-digit-token",
        "float-token",
        "bool-token",
        "number",
        "object",
        "null",
        "no-input",
        "no-model",
        "empty-model",
        "model-list",
        "zero-dimensions",
        "huge-dimensions",
        "string-dimensions",
        "hex-format",
        "user-int",
        "1e400",
    ],
)
async def test_embeddings_input_errors_are_400s_naming_the_field(
    stack: Stack, body: bytes, param: str
) -> None:
    """Malformed embeddings requests on llm.embeddings and POST /v1/embeddings are OpenAI 400s
    naming the field; a valid one is still answered afterwards."""
    reply = await ask(stack, "llm.embeddings", body)
    assert status(reply) == 400
    assert openai_error(reply.data)["param"] == param
    assert stack.http is not None
    response = await stack.http.post("/embeddings", content=body, headers=AUTH)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert status(await ask(stack, "llm.embeddings", embeddings(input=["still", "fine"]))) == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (messages(max_tokens=10**30), "max_tokens"),
        (messages(tool_choice=3), "tool_choice"),
        (messages(tool_choice={"type": "tool"}), "tool_choice.name"),
        (messages(tool_choice={"type": "sometimes"}), "tool_choice.type"),
        (messages(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (messages(messages=3), "messages"),
        (messages(messages=[{"role": "user", "content": [7]}]), "messages[0].content[0]"),
        (messages(system=5), "system"),
        (messages(tools=[{"description": "no name"}]), "tools[0].name"),
        (messages(stop_sequences=["a"] * 1000), "stop_sequences"),
        (messages(temperature=1.5), "temperature"),
        (with_raw_field(messages(), "top_k", b"9" * 5000), "top_k"),
    ],
    ids=[
        "huge-max-tokens",
        "tool-choice-int",
        "tool-choice-no-name",
        "tool-choice-type",
        "content-int",
        "messages-int",
        "block-int",
        "system-int",
        "tool-no-name",
        "1000-stops",
        "temperature",
        "5000-digits",
    ],
)
async def test_messages_api_errors_name_the_field(stack: Stack, body: bytes, field: str) -> None:
    """A malformed Messages request on llm.messages and POST /v1/messages is an Anthropic 400
    whose message leads with the field, never a Python exception's text."""
    reply = await ask(stack, "llm.messages", body)
    assert status(reply) == 400
    error = anthropic_error(reply.data)
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{field}: ")
    assert "is not iterable" not in error["message"]
    assert stack.http is not None
    response = await stack.http.post("/messages", content=body, headers=AUTH)
    assert response.status_code == 400
    assert anthropic_error(response.content)["message"] == error["message"]


async def test_deeply_nested_json_is_a_400_on_every_entry_point(stack: Stack) -> None:
    """JSON nested 100,000 deep is a 400 saying so over NATS (chat, messages, embeddings) and
    HTTP."""
    for subject, body in (
        ("llm.chat", with_raw_field(chat(), "x", DEEP)),
        ("llm.chat", with_raw_field(chat(), "x", DEEP_OBJECT)),
        ("llm.embeddings", with_raw_field(embeddings(), "x", DEEP)),
        ("llm.embeddings", with_raw_field(embeddings(), "x", DEEP_OBJECT)),
        ("llm.messages", with_raw_field(messages(), "x", DEEP)),
        ("llm.messages", with_raw_field(messages(), "metadata", DEEP_OBJECT)),
    ):
        reply = await ask(stack, subject, body)
        assert status(reply) == 400, subject
        assert b"nested too deeply" in reply.data
    assert stack.http is not None
    for path, body in (
        ("/chat/completions", with_raw_field(chat(stream=True), "x", DEEP)),
        ("/messages", with_raw_field(messages(stream=True), "x", DEEP)),
        ("/embeddings", with_raw_field(embeddings(), "x", DEEP)),
    ):
        response = await stack.http.post(path, content=body, headers=AUTH)
        assert response.status_code == 400, path
        assert "nested too deeply" in response.text
    assert status(await ask(stack, "llm.chat", chat())) == 200


async def test_messages_authenticates_before_it_validates(stack: Stack) -> None:
    """Without a key, a malformed Messages request is a 401 (as on llm.chat), not a 400."""
    reply = await ask(stack, "llm.messages", messages(tool_choice=3), hdrs={})
    assert status(reply) == 401
    assert anthropic_error(reply.data)["type"] == "authentication_error"
    assert stack.http is not None
    response = await stack.http.post("/messages", content=b"{not json")
    assert response.status_code == 401


async def test_messages_refusals_take_the_common_refusal_path(stack: Stack) -> None:
    """A refused Messages request carries X-Cache and is counted in llm_edge_requests_total."""
    labels = {"provider": "", "model": "", "status": "400", "tenant": ""}
    before = REGISTRY.get_sample_value("llm_edge_requests_total", labels) or 0.0
    reply = await ask(stack, "llm.messages", b"{not json")
    assert status(reply) == 400
    assert (reply.headers or {})[headers.CACHE] == "BYPASS"
    assert REGISTRY.get_sample_value("llm_edge_requests_total", labels) == before + 1


async def test_messages_tool_choice_reaches_the_provider_translated(stack: Stack) -> None:
    """A valid Anthropic tool_choice is still accepted and answered."""
    body = messages(
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    reply = await ask(stack, "llm.messages", body)
    assert status(reply) == 200
    assert msgspec.json.decode(reply.data)["type"] == "message"


@pytest.mark.parametrize("limit", ["abc", "1.5", "%00"])
async def test_batch_list_limit_must_be_an_integer(stack: Stack, limit: str) -> None:
    """GET /v1/batches?limit=abc is a 400 naming `limit`."""
    assert stack.http is not None
    response = await stack.http.get("/batches", params={"limit": limit}, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "limit"
    ok = await stack.http.get("/batches", params={"limit": "2"}, headers=AUTH)
    assert ok.status_code == 200


async def test_truncated_multipart_upload_is_refused(stack: Stack) -> None:
    """An upload without its closing boundary is a 400, and no file is stored."""
    assert stack.http is not None
    boundary = "b0undary"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    content_type = {"content-type": f"multipart/form-data; boundary={boundary}", **AUTH}
    before = (await stack.http.get("/files", headers=AUTH)).json()["data"]
    cut = await stack.http.post("/files", content=head + line * 3, headers=content_type)
    assert cut.status_code == 400
    assert "closing boundary" in cut.json()["error"]["message"]
    assert (await stack.http.get("/files", headers=AUTH)).json()["data"] == before
    whole = head + line * 3 + f"\r\n--{boundary}--\r\n".encode()
    stored = await stack.http.post("/files", content=whole, headers=content_type)
    assert stored.status_code == 200
    assert stored.json()["bytes"] == len(line) * 3


#: The issuer of the JWT holes below: its JWKS is a file the stack reads at start.
ISSUER_KEYS = Issuer()
ISSUER_KEYS.new_key("k1")
ISSUER_KEYS.publish("k1")


@pytest.fixture
async def jwt_stack(nats_url: str, make_stack: StackFactory, tmp_path: Path) -> Stack:
    """The same stack with ``[auth.jwt]`` trusting ISSUER_KEYS (a JWKS file)."""
    jwks = ISSUER_KEYS.write_jwks(tmp_path / "jwks.json")
    config = config_from(f"""
        [cache]
        l2 = "off"
        [auth.jwt]
        issuer = "{ISSUER}"
        audience = "{AUDIENCE}"
        jwks_file = "{jwks}"
        [tenants.acme]
        keys = ["{hash_key(KEY)}"]
        [providers.mock]
        kind = "mock"
        [models.mock]
        deployments = [{{ provider = "mock" }}]
    """)
    return await make_stack(nats_url, config, bridge=True)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


#: Bearer values shaped like JWTs (or nearly), each a hole a verifier could fall into.
HOSTILE_TOKENS = {
    "empty-segments": "eyJ..",
    "alg-none-empty-claims": unsigned({"alg": "none"}, {}),
    "header-not-an-object": f"eyJ{_b64(b'[1,2]')[3:]}.e30.e30",
    "header-not-json": "eyJ" + "A" * 5000 + ".e30.e30",
    "signature-not-base64": unsigned({"alg": "RS256", "kid": "k1"}, {}) + "!!!",
    "kid-path-traversal": unsigned({"alg": "RS256", "kid": "../../etc/passwd"}, {}, b"s" * 256),
    "kid-huge": unsigned({"alg": "RS256", "kid": "k" * 5000}, {}, b"s" * 256),
    "kid-not-a-string": unsigned({"alg": "RS256", "kid": ["k1"]}, {}, b"s" * 256),
    "crit-unknown": unsigned({"alg": "RS256", "kid": "k1", "crit": ["x-evil"], "x-evil": 1}, {}),
    "claims-nested-deep": unsigned({"alg": "RS256", "kid": "k1"}, {"a": [[[[[[[[]]]]]]]]}),
    "unicode": "eyJé.é.é",
    "jku-redirect": unsigned({"alg": "RS256", "jku": "http://127.0.0.1:1/keys"}, {}, b"s" * 256),
    "signed-exp-a-string": ISSUER_KEYS.token("k1", exp="soon"),
    "signed-tenant-a-list": ISSUER_KEYS.token("k1", tenant=["acme", "ops"]),
    "signed-models-an-int": ISSUER_KEYS.token("k1", models=7),
    "signed-limits-negative": ISSUER_KEYS.token("k1", llm_edge_limits={"rpm": -1}),
    "signed-limits-unknown-field": ISSUER_KEYS.token("k1", llm_edge_limits={"admin": True}),
    "signed-tenant-with-colon": ISSUER_KEYS.token("k1", tenant="acme:shared"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TOKENS))
async def test_hostile_tokens_are_401s_and_break_nothing(jwt_stack: Stack, case: str) -> None:
    """Every malformed, forged or ill-typed bearer JWT is a 401 envelope over NATS and HTTP
    (never a 500, never served); valid tokens and keys keep being served."""
    token = HOSTILE_TOKENS[case]
    reply = await ask(jwt_stack, "llm.chat", chat(), {headers.AUTHORIZATION: f"Bearer {token}"})
    assert status(reply) == 401, reply.data
    assert openai_error(reply.data)["code"] in {"invalid_token", "invalid_api_key"}
    assert jwt_stack.http is not None
    response = await jwt_stack.http.post(
        "/chat/completions",
        content=chat(),
        headers={"Authorization": f"Bearer {token}".encode()},  # bytes: UTF-8 as sent
    )
    assert response.status_code == 401
    good = {headers.AUTHORIZATION: f"Bearer {ISSUER_KEYS.token('k1')}"}
    assert status(await ask(jwt_stack, "llm.chat", chat(), good)) == 200
    assert status(await ask(jwt_stack, "llm.chat", chat())) == 200


async def test_a_token_over_the_header_bound_is_a_431(jwt_stack: Stack) -> None:
    """A bearer JWT over the 8 KiB Authorization bound is a 431 before any verification."""
    token = ISSUER_KEYS.token("k1", padding="p" * 9000)
    reply = await ask(jwt_stack, "llm.chat", chat(), {headers.AUTHORIZATION: f"Bearer {token}"})
    assert status(reply) == 431
    assert openai_error(reply.data)["param"] == headers.AUTHORIZATION
