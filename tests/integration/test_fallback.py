"""Context-window and content-policy fallback end to end: HTTP through the bridge and NATS,
broker, OpenAI-compatible worker, a fake upstream serving every model (told apart by the
upstream model name it receives)."""

from __future__ import annotations

import msgspec
import pytest

from schemas import headers
from tests.support.stack import Stack, StackFactory, chat, config_from
from tests.support.upstream import FakeOpenAI, Scripted, openai_completion

#: small holds 1,000 tokens; a 6,000-byte prompt is over it by any count.
LONG = "x" * 6000


@pytest.fixture
async def stack(nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory) -> Stack:
    config = config_from(f"""
        [cache]
        enabled = false
        [batch]
        enabled = false

        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"

        [models.small]
        context_window = 1000
        context_fallback = "big"
        content_policy_fallback = "big"
        deployments = [{{ provider = "up", model = "up-small" }}]

        [models.big]
        context_window = 100000
        deployments = [{{ provider = "up", model = "up-big" }}]

        [models.alone]
        context_window = 1000
        deployments = [{{ provider = "up", model = "up-alone" }}]
    """)
    return await make_stack(nats_url, config, bridge=True)


def sent_models(fake: FakeOpenAI) -> list[str]:
    return [r.body["model"] for r in fake.received]


def body_of(content: str, model: str = "small", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def test_http_long_prompt_is_served_by_the_bigger_model(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """Over small's window: big answers, the response says so, small's upstream saw nothing."""
    assert stack.http is not None
    response = await stack.http.post("/chat/completions", json=body_of(LONG))
    assert response.status_code == 200
    assert response.headers["llm-fallback"] == "context_window"
    assert response.headers["llm-model"] == "big"
    assert response.json()["model"] == "up-big"
    assert sent_models(fake_openai) == ["up-big"]


async def test_http_stream_decides_before_the_first_byte(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """A long streamed request opens on big: the stream's headers name the fallback."""
    assert stack.http is not None
    async with stack.http.stream(
        "POST", "/chat/completions", json=body_of(LONG, stream=True)
    ) as response:
        text = (await response.aread()).decode()
    assert response.status_code == 200
    assert response.headers["llm-fallback"] == "context_window"
    assert '"model": "up-big"' in text  # the chunks are big's
    assert "data: [DONE]" in text
    assert sent_models(fake_openai) == ["up-big"]


async def test_nats_upstream_context_error_is_retried_once_on_the_fallback(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """A short prompt small's upstream refuses as too long: sent once more, to big."""
    fake_openai.script.append(
        Scripted(
            status=400,
            body={
                "error": {
                    "message": "This model's maximum context length is 1000 tokens.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            },
        )
    )
    msg = await stack.nc.request("llm.chat", chat("digits 0123456789", model="small"), timeout=10)
    assert msg.headers is not None
    assert msg.headers[headers.STATUS] == "200"
    assert msg.headers[headers.FALLBACK] == "context_window"
    assert msg.headers[headers.MODEL] == "big"
    assert sent_models(fake_openai) == ["up-small", "up-big"]


async def test_nats_content_refusal_is_served_by_the_content_fallback(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """small's answer finished for content_filter: big's answer is the reply."""
    filtered = openai_completion("up-small", "")
    filtered["choices"][0]["finish_reason"] = "content_filter"
    fake_openai.script.append(Scripted(body=filtered))
    msg = await stack.nc.request("llm.chat", chat("something edgy", model="small"), timeout=10)
    assert msg.headers is not None
    assert msg.headers[headers.FALLBACK] == "content_policy"
    answer = msgspec.json.decode(msg.data)
    assert answer["model"] == "up-big"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert sent_models(fake_openai) == ["up-small", "up-big"]


async def test_nats_content_policy_error_without_fallback_passes_through(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """alone has no content fallback: the upstream's refusal reaches the caller, coded."""
    fake_openai.script.append(
        Scripted(
            status=400,
            body={
                "error": {
                    "message": "Your request was rejected as a result of our safety system.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "content_policy_violation",
                }
            },
        )
    )
    msg = await stack.nc.request("llm.chat", chat("something edgy", model="alone"), timeout=10)
    assert msg.headers is not None
    assert msg.headers[headers.STATUS] == "400"
    error = msgspec.json.decode(msg.data)["error"]
    assert error["code"] == "content_policy_violation"
    assert "safety system" in error["message"]
    assert sent_models(fake_openai) == ["up-alone"]


async def test_http_surely_too_long_without_fallback_is_a_clear_400(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """alone has no context fallback: a prompt surely over its window is refused before any
    upstream call, with an OpenAI-style context_length_exceeded."""
    assert stack.http is not None
    response = await stack.http.post(
        "/chat/completions", json=body_of("x" * 120_000, model="alone")
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["type"] == "invalid_request_error"
    assert "maximum context length is 1000 tokens" in error["message"]
    assert fake_openai.received == []


def responses_body(text: str, model: str = "small", **extra: object) -> dict[str, object]:
    return {"model": model, "input": text, **extra}


async def test_http_responses_long_input_is_served_by_the_bigger_model(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """A Responses request whose input is over small's window goes to big before any call."""
    assert stack.http is not None
    response = await stack.http.post("/responses", json=responses_body(LONG))
    assert response.status_code == 200
    assert response.headers["llm-fallback"] == "context_window"
    assert response.headers["llm-model"] == "big"
    assert response.json()["output"][0]["content"][0]["text"] == "upstream says hi to up-big"
    assert sent_models(fake_openai) == ["up-big"]


async def test_http_responses_long_instructions_count_too(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """Long instructions with a short input are over small's window as well."""
    assert stack.http is not None
    body = responses_body("hi", instructions=LONG)
    response = await stack.http.post("/responses", json=body)
    assert response.status_code == 200
    assert response.headers["llm-fallback"] == "context_window"
    assert sent_models(fake_openai) == ["up-big"]


async def test_http_responses_a_conversation_grown_past_the_window_moves_to_the_bigger_model(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """Each turn alone fits small's window; the second with the first's items (sent along by
    previous_response_id) does not: small serves the first turn, big the second."""
    assert stack.http is not None
    turn = "word " * 360  # 1,800 bytes: at most 600 tokens
    first = await stack.http.post("/responses", json=responses_body(turn))
    assert first.status_code == 200
    assert "llm-fallback" not in first.headers
    second = await stack.http.post(
        "/responses", json=responses_body(turn, previous_response_id=first.json()["id"])
    )
    assert second.status_code == 200, second.text
    assert second.headers["llm-fallback"] == "context_window"
    assert second.headers["llm-model"] == "big"
    assert sent_models(fake_openai) == ["up-small", "up-big"]
    conversation = fake_openai.received[1].body["messages"]
    assert [m["role"] for m in conversation] == ["user", "assistant", "user"]


@pytest.mark.parametrize("refusal", ["content_filter", "refusal_part"])
async def test_http_responses_refusal_is_served_by_the_content_fallback(
    stack: Stack, fake_openai: FakeOpenAI, refusal: str
) -> None:
    """small's answer is a refusal (cut for content_filter, or a refusal part): big's
    response is the reply."""
    refused = openai_completion("up-small", "")
    if refusal == "content_filter":
        refused["choices"][0]["finish_reason"] = "content_filter"
    else:
        refused["choices"][0]["message"] = {"role": "assistant", "refusal": "I can't help."}
    fake_openai.script.append(Scripted(body=refused))
    assert stack.http is not None
    response = await stack.http.post("/responses", json=responses_body("something edgy"))
    assert response.status_code == 200
    assert response.headers["llm-fallback"] == "content_policy"
    answer = response.json()
    assert answer["status"] == "completed"
    assert answer["output"][0]["content"] == [
        {"type": "output_text", "text": "upstream says hi to up-big", "annotations": []}
    ]
    assert sent_models(fake_openai) == ["up-small", "up-big"]


async def test_http_responses_refusal_without_fallback_passes_through(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """alone has no content fallback: its refusal part reaches the caller."""
    refused = openai_completion("up-alone", "")
    refused["choices"][0]["message"] = {"role": "assistant", "refusal": "I can't help."}
    fake_openai.script.append(Scripted(body=refused))
    assert stack.http is not None
    body = responses_body("something edgy", model="alone")
    response = await stack.http.post("/responses", json=body)
    assert response.status_code == 200
    assert "llm-fallback" not in response.headers
    parts = response.json()["output"][0]["content"]
    assert parts == [{"type": "refusal", "refusal": "I can't help."}]
    assert sent_models(fake_openai) == ["up-alone"]


async def test_http_responses_surely_too_long_without_fallback_is_a_clear_400(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """alone has no context fallback: an input surely over its window is refused before any
    upstream call, naming the Responses API's own field."""
    assert stack.http is not None
    body = responses_body("x" * 120_000, model="alone")
    response = await stack.http.post("/responses", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "input"
    assert "maximum context length is 1000 tokens" in error["message"]
    assert fake_openai.received == []
