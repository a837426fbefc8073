"""Logging: console or JSON lines; one line per request at its end (never prompts or keys)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["JsonFormatter", "configure", "request_line"]

access = logging.getLogger("llm_edge.requests")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...fields}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"))


def configure(env: Mapping[str, str]) -> None:
    """``LLM_EDGE_LOG_LEVEL`` (INFO) and ``LLM_EDGE_LOG_FORMAT`` (``console`` or ``json``)."""
    handler = logging.StreamHandler()
    if env.get("LLM_EDGE_LOG_FORMAT", "console") == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=env.get("LLM_EDGE_LOG_LEVEL", "INFO"), handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise


def request_line(fields: dict[str, Any], started: float) -> None:
    """The one log line of a finished request (``fields`` must hold no prompt, PII or key)."""
    if not access.isEnabledFor(logging.INFO):
        return
    fields["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
    summary = " ".join(f"{k}={v}" for k, v in fields.items())
    access.info(summary, extra={"fields": fields})
