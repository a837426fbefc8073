"""One trace across bridge -> broker -> worker -> upstream HTTP, through real NATS."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.stack import config_from, start_stack
from tests.support.upstream import FakeOpenAI

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """An in-memory exporter behind the global tracer provider (set once per process)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    return _EXPORTER


async def test_one_trace_id_across_every_hop(
    nats_url: str, fake_openai: FakeOpenAI, spans: InMemorySpanExporter
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
    stack = await start_stack(nats_url, config, bridge=True)
    spans.clear()
    try:
        assert stack.http is not None
        response = await stack.http.post(
            "/chat/completions",
            json={"model": "traced", "messages": [{"role": "user", "content": "trace me"}]},
        )
        assert response.status_code == 200
    finally:
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
