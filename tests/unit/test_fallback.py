"""Context-window and content-policy fallback: the count, the decision, the workers' mapping,
and one request through :class:`~broker.upstream.calls.Upstream` with an in-memory forward."""

from __future__ import annotations

import random
import textwrap
from collections.abc import AsyncGenerator

import msgspec
import pytest
from prometheus_client import REGISTRY

from broker.cache.directives import CacheDirectives
from broker.config import Config, ConfigError
from broker.errors import ContextLengthExceeded, UpstreamFailed
from broker.request import Call, Prepared, Reply
from broker.upstream.calls import Upstream
from broker.upstream.deployments import Deployment
from broker.upstream.fallback import Fallbacks, Reason, refused
from broker.upstream.forward import StreamEvent
from broker.upstream.resilience import Resilient
from broker.upstream.router import Router
from broker.upstream.window import need_of
from schemas import StreamEnd, decode_chat_request, headers
from schemas.api import Api
from schemas.responses import decode_responses_request
from workers.calls import failure
from workers.errors import ErrorKind, ProviderError, refined

CONFIG = Config.from_toml(
    textwrap.dedent("""
    [resilience]
    max_attempts = 2
    backoff_initial_s = 0

    [providers.p]
    kind = "mock"

    [models.small]
    context_window = 1000
    max_output_tokens = 200
    context_fallback = "big"
    content_policy_fallback = "lenient"
    deployments = [
      { name = "small-a", provider = "p" },
      { name = "small-b", provider = "p", context_window = 500 },
    ]

    [models.big]
    context_window = 100000
    max_output_tokens = 4000
    deployments = [{ name = "big-a", provider = "p" }]

    [models.lenient]
    deployments = [{ name = "lenient-a", provider = "p" }]

    [models.alone]
    context_window = 1000
    max_output_tokens = 200
    deployments = [{ name = "alone-a", provider = "p" }]

    [models.plain]
    deployments = [{ name = "plain-a", provider = "p" }]
""")
)


def prepared(model: str, text: str, *, max_tokens: int | None = None) -> Prepared:
    fields: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if max_tokens is not None:
        fields["max_tokens"] = max_tokens
    data = msgspec.json.encode(fields)
    return Prepared(
        data=data,
        request=decode_chat_request(data),
        model=CONFIG.models[model],
        request_id="r1",
        deadline=1e9,
        key=None,
        directives=CacheDirectives(),
    )


# --- the count ------------------------------------------------------------------------------


def test_the_upper_bound_counts_three_bytes_a_token_and_the_sure_bound_twelve() -> None:
    """3,000 bytes of text are at most 1,000 tokens (plus the message's own) and surely 250."""
    need = need_of(prepared("small", "x" * 3000, max_tokens=50))
    assert 1000 < need.prompt <= 1000 + 20
    assert need.sure == (3000 + len("role") + len("user") + len("content")) // 12
    assert need.max_tokens == 50
    assert need.total == need.prompt + 50


def test_non_ascii_text_counts_its_utf8_bytes_not_its_escapes() -> None:
    """Chinese sent as \\u escapes counts its UTF-8 bytes (3 a character), not 6."""
    need = need_of(prepared("small", "中" * 900))
    assert 900 <= need.prompt <= 900 + 20


def test_a_picture_counts_a_fixed_allowance_not_its_base64() -> None:
    """A 300 KB data URL is one attachment (1,600 tokens), not 100,000 tokens of text."""
    picture = "data:image/png;base64," + "A" * 300_000
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": picture}},
    ]
    data = msgspec.json.encode(
        {"model": "small", "messages": [{"role": "user", "content": content}]}
    )
    call = prepared("small", "")
    call.request = decode_chat_request(data)
    need = need_of(call)
    assert 1600 <= need.prompt < 1700
    assert need.sure < 10


def test_a_picture_by_url_counts_the_same_allowance_as_one_inline() -> None:
    """A picture linked by a short https URL costs the upstream as many tokens as the same
    picture inline, so it counts the attachment allowance, not its URL's 40 bytes."""
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    data = msgspec.json.encode(
        {"model": "small", "messages": [{"role": "user", "content": content}]}
    )
    call = prepared("small", "")
    call.request = decode_chat_request(data)
    need = need_of(call)
    assert 1600 <= need.prompt < 1700


def test_deployments_inherit_the_models_window_unless_they_set_their_own() -> None:
    """``context_window`` on the model applies to each deployment that does not set one."""
    small = CONFIG.models["small"]
    assert [d.context_window for d in small.deployments] == [1000, 500]
    assert [d.max_output_tokens for d in small.deployments] == [200, 200]
    assert small.windowed
    assert not CONFIG.models["plain"].windowed


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ('context_fallback = "nope"', "context_fallback 'nope' is not another configured model"),
        ('content_policy_fallback = "a"', "content_policy_fallback 'a' is not another"),
        ("context_window = 0", "context_window and max_output_tokens must be > 0"),
    ],
)
def test_fallback_names_and_windows_are_checked(model: str, message: str) -> None:
    """A fallback naming no other model, or a window of 0, is refused naming the key."""
    toml = f"""
[providers.p]
kind = "mock"
[models.a]
{model}
deployments = [{{ provider = "p" }}]
"""
    with pytest.raises(ConfigError) as caught:
        Config.from_toml(toml)
    assert message in str(caught.value)


# --- the decision before the call -----------------------------------------------------------


def test_a_request_that_fits_stays_on_its_model_minus_the_deployments_too_small() -> None:
    """1,800 bytes (600 tokens) fit small-a's 1,000 but not small-b's 500."""
    route = Fallbacks(CONFIG.models).route(prepared("small", "x" * 1800))
    assert (route.model.name, route.reason) == ("small", None)
    fitting = [d.name for d in route.model.deployments if route.fits(d)]
    assert fitting == ["small-a"]


def test_a_long_prompt_goes_to_the_context_fallback() -> None:
    """A prompt over every deployment's window goes to `big`, named as a context fallback."""
    route = Fallbacks(CONFIG.models).route(prepared("small", "x" * 6000))
    assert (route.model.name, route.reason) == ("big", Reason.CONTEXT_WINDOW)


def test_max_tokens_over_the_models_answer_length_goes_to_the_fallback() -> None:
    """A short prompt asking for 1,000 tokens of answer (small writes 200) goes to `big`."""
    route = Fallbacks(CONFIG.models).route(prepared("small", "hi", max_tokens=1000))
    assert route.model.name == "big"


def test_surely_too_long_without_a_fallback_is_a_400_before_any_call() -> None:
    """120,000 bytes are surely over 1,000 tokens: context_length_exceeded, naming the window."""
    with pytest.raises(ContextLengthExceeded) as caught:
        Fallbacks(CONFIG.models).route(prepared("alone", "x" * 120_000))
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "messages")
    body = msgspec.json.decode(error.envelope())["error"]
    assert body["code"] == "context_length_exceeded"
    assert "maximum context length is 1000 tokens" in body["message"]


def test_maybe_too_long_without_a_fallback_goes_upstream_unfiltered() -> None:
    """4,000 bytes may be over 1,000 tokens but are not surely: the upstream decides."""
    route = Fallbacks(CONFIG.models).route(prepared("alone", "x" * 4000))
    assert (route.model.name, route.reason, route.need) == ("alone", None, None)


def test_too_long_even_for_the_fallback_is_refused() -> None:
    """Over `big`'s 100,000 tokens for sure (1.3 MB): refused, no call anywhere."""
    with pytest.raises(ContextLengthExceeded):
        Fallbacks(CONFIG.models).route(prepared("small", "x" * 1_300_000))


def test_models_without_windows_are_never_counted() -> None:
    """A model that declares no window routes any request to itself, uncounted."""
    route = Fallbacks(CONFIG.models).route(prepared("plain", "x" * 1_000_000))
    assert (route.model.name, route.need) == ("plain", None)


# --- the decision after the call ------------------------------------------------------------


def answer(finish: str) -> bytes:
    return msgspec.json.encode(
        {"choices": [{"index": 0, "message": {"role": "assistant"}, "finish_reason": finish}]}
    )


def test_refusals_are_told_from_answers() -> None:
    """content_filter (chat) and stop_reason refusal (Messages) are refusals; others are not."""
    assert refused(answer("content_filter"), Api.CHAT)
    assert not refused(answer("stop"), Api.CHAT)
    assert not refused(
        b'{"choices":[{"message":{"refusal":null},"finish_reason":"stop"}]}', Api.CHAT
    )
    assert refused(b'{"type":"message","stop_reason":"refusal","content":[]}', Api.MESSAGES)
    assert not refused(b'{"type":"message","stop_reason":"end_turn","content":[]}', Api.MESSAGES)


def response_answer(status: str, reason: str | None, *parts: dict[str, object]) -> bytes:
    message = {"type": "message", "role": "assistant", "content": list(parts)}
    details = {"reason": reason} if reason else None
    body = {"status": status, "incomplete_details": details, "output": [message]}
    return msgspec.json.encode(body)


def test_responses_refusals_are_told_from_answers() -> None:
    """A Responses answer with a refusal part, or incomplete for content_filter, is a
    refusal; a plain or merely cut-short one (or one quoting the word) is not."""
    text = {"type": "output_text", "text": "ok", "annotations": []}
    refusal = {"type": "refusal", "refusal": "no"}
    assert refused(response_answer("completed", None, refusal), Api.RESPONSES)
    assert refused(response_answer("incomplete", "content_filter", text), Api.RESPONSES)
    assert not refused(response_answer("completed", None, text), Api.RESPONSES)
    assert not refused(response_answer("incomplete", "max_output_tokens", text), Api.RESPONSES)
    quoted = {**text, "text": 'say "refusal" and "content_filter"'}
    assert not refused(response_answer("completed", None, quoted), Api.RESPONSES)


def test_responses_input_and_instructions_are_counted() -> None:
    """A Responses request's input, instructions and tools count, as a chat's messages do;
    its max_output_tokens is the answer it asks for."""
    fields = {
        "model": "small",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "x" * 300}]}],
        "instructions": "y" * 300,
        "tools": [{"type": "function", "name": "f", "parameters": {}}],
        "max_output_tokens": 50,
    }
    data = msgspec.json.encode(fields)
    call = Prepared(
        data=data,
        request=decode_responses_request(data),
        model=CONFIG.models["small"],
        request_id="r1",
        deadline=1e9,
        key=None,
        directives=CacheDirectives(),
        api=Api.RESPONSES,
    )
    need = need_of(call)
    assert need.prompt >= 600 // 3  # the 600 bytes of text, and the parts around them
    assert need.sure >= 600 // 12
    assert need.max_tokens == 50


def test_upstream_refusals_name_their_fallback() -> None:
    """A context-length error goes to context_fallback, a content error or refusal to
    content_policy_fallback; other errors, and models without one, go nowhere."""
    fallbacks = Fallbacks(CONFIG.models)
    call = prepared("small", "hi")
    route = fallbacks.route(call)
    too_long = UpstreamFailed(400, b"{}", {}, "context_length_exceeded")
    policy = UpstreamFailed(400, b"{}", {}, "content_policy_violation")
    other = UpstreamFailed(400, b"{}", {}, "bad_request")
    again = fallbacks.after_failure(call, route, too_long)
    assert again is not None
    assert (again.model.name, again.reason) == ("big", "context_window")
    again = fallbacks.after_failure(call, route, policy)
    assert again is not None
    assert (again.model.name, again.reason) == ("lenient", "content_policy")
    assert fallbacks.after_failure(call, route, other) is None
    again = fallbacks.after_answer(call, route, Reply(200, answer("content_filter")))
    assert again is not None
    assert again.model.name == "lenient"
    assert fallbacks.after_answer(call, route, Reply(200, answer("stop"))) is None
    alone = prepared("alone", "hi")
    assert fallbacks.after_failure(alone, fallbacks.route(alone), too_long) is None


# --- the workers' mapping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("This model's maximum context length is 128000 tokens.", ErrorKind.CONTEXT_LENGTH),
        ("prompt is too long: 210000 tokens > 200000 maximum", ErrorKind.CONTEXT_LENGTH),
        (
            "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000",
            ErrorKind.CONTEXT_LENGTH,
        ),
        (
            "The input token count (1048577) exceeds the maximum number of tokens allowed",
            ErrorKind.CONTEXT_LENGTH,
        ),
        ("ValidationException: Input is too long for requested model.", ErrorKind.CONTEXT_LENGTH),
        (
            "Your request was rejected as a result of our safety system.",
            ErrorKind.CONTENT_POLICY,
        ),
        (
            "The response was filtered due to the prompt triggering Azure OpenAI's content "
            "management policy.",
            ErrorKind.CONTENT_POLICY,
        ),
        ("temperature: must be <= 2", ErrorKind.BAD_REQUEST),
    ],
)
def test_worded_refusals_get_their_own_kind(message: str, kind: ErrorKind) -> None:
    """Providers' 400 wordings map to context_length / content_policy; other 400s stay."""
    error = ProviderError("p", ErrorKind.BAD_REQUEST, message, upstream_status=400)
    assert refined(error).kind is kind


def test_the_worker_names_the_code_in_a_header_whatever_the_api() -> None:
    """The error reply carries Llm-Error-Code; the status stays 400, not retryable."""
    error = ProviderError("p", ErrorKind.BAD_REQUEST, "prompt is too long", upstream_status=400)
    for api in (Api.CHAT, Api.MESSAGES):
        status, body, extra = failure(error, "p", 5.0, api)
        assert status == 400
        assert extra == {headers.ERROR_CODE: "context_length_exceeded"}
        assert b"prompt is too long" in body


def test_a_refusal_of_our_own_is_not_taken_for_the_upstreams() -> None:
    """A 400 without an upstream status (a field we cannot carry) is never reclassified."""
    error = ProviderError("p", ErrorKind.BAD_REQUEST, "context window: no such field")
    assert refined(error).kind is ErrorKind.BAD_REQUEST


# --- through Upstream -----------------------------------------------------------------------


class Forward:
    """Answers each deployment from a script: an UpstreamFailed to raise or a body."""

    def __init__(self, script: dict[str, UpstreamFailed | bytes]) -> None:
        self.script = script
        self.calls: list[str] = []

    async def whole(self, prepared: Call, deployment: Deployment, deadline: float) -> Reply:
        self.calls.append(deployment.name)
        outcome = self.script.get(deployment.name, answer("stop"))
        if isinstance(outcome, UpstreamFailed):
            raise outcome
        return Reply(200, outcome)

    async def stream(
        self, prepared: Prepared, deployment: Deployment, deadline: float
    ) -> AsyncGenerator[StreamEvent, None]:
        self.calls.append(deployment.name)
        outcome = self.script.get(deployment.name)
        if isinstance(outcome, UpstreamFailed):
            raise outcome
        yield StreamEnd()


def upstream(forward: Forward) -> Upstream:
    router = Router(CONFIG.breaker, rng=random.Random(1))
    resilient = Resilient(CONFIG, router, lambda: 0.0, rng=random.Random(1))
    return Upstream(resilient, forward, Fallbacks(CONFIG.models))


def fallbacks_counted(reason: str, model: str) -> float:
    value = REGISTRY.get_sample_value(
        "llm_edge_fallbacks_total", {"reason": reason, "model": model}
    )
    return value or 0.0


async def test_a_long_prompt_is_served_by_the_fallback_without_calling_the_small_model() -> None:
    """The small model's deployments see no call; the reply names big and the reason."""
    forward = Forward({})
    before = fallbacks_counted("context_window", "small")
    reply = await upstream(forward).whole(prepared("small", "x" * 6000))
    assert forward.calls == ["big-a"]
    assert reply.headers[headers.MODEL] == "big"
    assert reply.headers[headers.FALLBACK] == "context_window"
    assert fallbacks_counted("context_window", "small") == before + 1


async def test_an_upstream_context_error_is_retried_once_on_the_fallback() -> None:
    """small-a says too long: the request goes to big once; big's answer is the reply."""
    too_long = UpstreamFailed(400, b'{"error":{}}', {}, "context_length_exceeded")
    forward = Forward({"small-a": too_long, "small-b": too_long})
    reply = await upstream(forward).whole(prepared("small", "x" * 1200))
    assert forward.calls == ["small-a", "big-a"]
    assert (reply.status, reply.headers[headers.FALLBACK]) == (200, "context_window")


async def test_a_content_refusal_is_served_by_the_content_fallback() -> None:
    """A 200 finished for content_filter goes once to `lenient`, whose answer is the reply."""
    forward = Forward({"small-a": answer("content_filter"), "small-b": answer("content_filter")})
    reply = await upstream(forward).whole(prepared("small", "hi"))
    assert forward.calls[-1] == "lenient-a"
    assert len(forward.calls) == 2
    assert reply.headers[headers.MODEL] == "lenient"
    assert reply.headers[headers.FALLBACK] == "content_policy"
    assert not refused(reply.body, Api.CHAT)


async def test_without_a_fallback_the_refusal_passes_through() -> None:
    """`alone` has no content fallback: its content_filter answer is the reply, unchanged."""
    forward = Forward({"alone-a": answer("content_filter")})
    reply = await upstream(forward).whole(prepared("alone", "hi"))
    assert forward.calls == ["alone-a"]
    assert refused(reply.body, Api.CHAT)
    assert headers.FALLBACK not in reply.headers
    assert reply.headers[headers.MODEL] == "alone"


async def test_a_stream_refused_before_its_first_event_opens_on_the_fallback() -> None:
    """A content-policy error before the first event: the stream opens on `lenient`."""
    policy = UpstreamFailed(400, b"{}", {}, "content_policy_violation")
    forward = Forward({"small-a": policy, "small-b": policy})
    call = prepared("small", "hi")
    first, events, named, deployment = await upstream(forward).open_stream(call)
    await events.aclose()
    assert isinstance(first, StreamEnd)
    assert deployment.name == "lenient-a"
    assert named[headers.FALLBACK] == "content_policy"
