"""One trace across bridge -> broker -> worker -> upstream HTTP, through real NATS."""

from __future__ import annotations

import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from schemas import decode_chat_request
from tests.support.anthropic_shapes import MESSAGE
from tests.support.scripted_upstream import Answer, Sent, scripted_upstream
from tests.support.stack import StackFactory, config_from
from tests.support.upstream import FakeOpenAI
from workers import AnthropicProvider, ProviderConfig, ProviderKind, http_client
from workers.base import ProviderRequest

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """An in-memory exporter behind the global tracer provider (set once per process)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    return _EXPORTER


async def test_one_trace_id_across_every_hop(
    nats_url: str, fake_openai: FakeOpenAI, spans: InMemorySpanExporter, make_stack: StackFactory
) -> None:
    """Every span of one HTTP request shares its trace id; the upstream sees it too."""
    config = config_from(f"""
        [cache]
        enabled = false
        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        [models.traced]
        deployments = [{{ provider = "up" }}]
    """)
    stack = await make_stack(nats_url, config, bridge=True)
    spans.clear()
    assert stack.http is not None
    response = await stack.http.post(
        "/chat/completions",
        json={"model": "traced", "messages": [{"role": "user", "content": "trace me"}]},
    )
    assert response.status_code == 200
    await stack.stop()
    finished = spans.get_finished_spans()
    names = {s.name for s in finished}
    assert {"POST llm.chat", "llm.chat", "route", "llm.provider.up", "upstream POST"} <= names
    trace_ids = {
        s.context.trace_id
        for s in finished
        if s.name in {"POST llm.chat", "llm.chat", "route", "llm.provider.up", "upstream POST"}
    }
    assert len(trace_ids) == 1
    (trace_id,) = trace_ids
    upstream_parent = fake_openai.received[-1].headers["traceparent"]
    assert upstream_parent.split("-")[1] == f"{trace_id:032x}"


async def test_anthropic_upstream_call_joins_the_trace(spans: InMemorySpanExporter) -> None:
    """The Anthropic call is a client span of the request's trace; the upstream gets its
    traceparent and our correlation id."""
    seen: list[Sent] = []

    def upstream(sent: Sent) -> Answer:
        seen.append(sent)
        return Answer(200, json=MESSAGE)

    raw = msgspec.json.encode({"model": "claude", "messages": [{"role": "user", "content": "hi"}]})
    request = ProviderRequest(
        body=raw,
        chat=decode_chat_request(raw),
        upstream_model="claude-sonnet-4-5",
        timeout_s=5,
        request_id="req-trace-1",
    )
    spans.clear()
    async with scripted_upstream(upstream) as base, http_client() as client:
        config = ProviderConfig(name="claude", kind=ProviderKind.ANTHROPIC, base_url=base + "/v1")
        with trace.get_tracer("test").start_as_current_span("llm.provider.claude") as parent:
            await AnthropicProvider(config, client, None).complete(request)
    trace_id = parent.get_span_context().trace_id
    (call,) = [s for s in spans.get_finished_spans() if s.name == "upstream POST"]
    assert call.kind is trace.SpanKind.CLIENT
    assert call.attributes is not None
    assert call.attributes["llm.provider"] == "claude"
    assert call.context.trace_id == trace_id
    assert seen[0].headers["traceparent"].split("-")[1:3] == [
        f"{trace_id:032x}",
        f"{call.context.span_id:016x}",
    ]
    assert seen[0].headers["x-request-id"] == "req-trace-1"
