# One image for every service: the command picks the role (broker, worker NAME, bridge, up).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY workers ./workers
COPY schemas ./schemas
RUN pip install --no-cache-dir . && useradd --system llm-edge
USER llm-edge
ENV LLM_EDGE_LOG_LEVEL=INFO
ENTRYPOINT ["llm-edge"]
CMD ["up", "--host", "0.0.0.0"]
