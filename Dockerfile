# One image for every service: the command picks the role (broker, worker NAME, bridge, up).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY workers ./workers
COPY schemas ./schemas
COPY edge_runtime ./edge_runtime
COPY edge_client ./edge_client
COPY edge_bridge ./edge_bridge
COPY llm_edge ./llm_edge
# the otel extra: services export traces when OTEL_EXPORTER_OTLP_ENDPOINT is set
RUN pip install --no-cache-dir ".[otel]" && useradd --system llm-edge
USER llm-edge
ENV LLM_EDGE_LOG_LEVEL=INFO
ENTRYPOINT ["llm-edge"]
CMD ["up", "--host", "0.0.0.0"]
