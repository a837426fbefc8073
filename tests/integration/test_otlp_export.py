"""OTLP export switched on by OTEL_EXPORTER_OTLP_ENDPOINT: the real command, real processes,
an OTLP/HTTP collector in the test."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.servers import free_port

pytestmark = pytest.mark.process


@dataclass
class OtlpSink:
    """Spans POSTed to /v1/traces, as (service.name, span name, trace id)."""

    url: str = ""
    spans: list[tuple[str, str, bytes]] = field(default_factory=list)
    other_paths: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def receive(self, path: str, body: bytes) -> None:
        with self.changed:
            if path != "/v1/traces":
                self.other_paths.append(path)
            else:
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    attributes = {
                        a.key: a.value.string_value for a in resource_spans.resource.attributes
                    }
                    for scope in resource_spans.scope_spans:
                        self.spans.extend(
                            (attributes["service.name"], s.name, s.trace_id) for s in scope.spans
                        )
            self.changed.notify_all()

    def wait_for_services(self, services: set[str], timeout_s: float) -> bool:
        """Until spans from every one of ``services`` have arrived (or ``timeout_s``)."""
        with self.changed:
            return self.changed.wait_for(
                lambda: services <= {s for s, _, _ in self.spans}, timeout_s
            )


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    """An OTLP/HTTP collector on a free loopback port."""
    collected = OtlpSink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            collected.receive(self.path, body)
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    collected.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collected
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("mode", "services"),
    [
        (
            "--processes",
            {
                "POST llm.chat": "llm-edge-bridge",
                "llm.chat": "llm-edge-broker",
                "llm.provider.mock": "llm-edge-worker-mock",
            },
        ),
        (None, dict.fromkeys(("POST llm.chat", "llm.chat", "llm.provider.mock"), "llm-edge")),
    ],
    ids=["processes", "one-process"],
)
def test_every_role_exports_spans_of_one_trace(
    sink: OtlpSink, tmp_path: Path, mode: str | None, services: dict[str, str]
) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, `llm-edge up`'s bridge, broker and worker export
    their spans of one request to the collector's /v1/traces, all in one trace: each role
    under its own service.name as separate processes, under ``llm-edge`` in one process."""
    port = free_port()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k
            not in {
                "OPENAI_API_KEY",
                "ANTHROPIC_API_KEY",
                "NATS_URL",
                "REDIS_URL",
                "LLM_EDGE_CONFIG",
            }
        },
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llm_edge",
            "up",
            "--port",
            str(port),
            "--nats-port",
            "-1",
            "--data-dir",
            str(tmp_path),
            *([mode] if mode else []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(("Ready.", "llm-edge:")):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(60), "".join(lines)
        assert "Ready." in "".join(lines), "".join(lines)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "trace"}]},
            timeout=10,
        )
        assert response.status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # the services flush their spans as they stop
        proc.wait(30)
    assert sink.wait_for_services(set(services.values()), timeout_s=30), (sink.spans, lines)
    assert sink.other_paths == []
    by_name = {name: (service, trace_id) for service, name, trace_id in sink.spans}
    assert {name: by_name[name][0] for name in services} == services
    trace_ids = {by_name[n][1] for n in ("POST llm.chat", "llm.chat", "llm.provider.mock")}
    assert len(trace_ids) == 1
