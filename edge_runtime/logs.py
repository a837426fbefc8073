"""Logging: console or JSON lines; one line per request at its end (never prompts or keys).

Lines at INFO and below are written in batches (:class:`BatchedStreamHandler`): a request
line per miss, each written and flushed on its own, was one ``write`` system call per
request. Warnings and errors are written at once, after what is pending.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["FLUSH_S", "BatchedStreamHandler", "JsonFormatter", "configure", "request_line"]

#: The longest an INFO line waits to be written (with the others of its batch).
FLUSH_S = 0.1
#: A batch this long is written without waiting.
MAX_PENDING = 512

access = logging.getLogger("llm_edge.requests")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...fields}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return _json_line(
            record.created,
            record.levelname.lower(),
            record.name,
            record.getMessage(),
            fields if isinstance(fields, dict) else None,
            exc=exc,
        )

    def request(self, summary: str, fields: dict[str, Any], created: float) -> str:
        """A request line as :meth:`format` would write its record."""
        return _json_line(created, "info", access.name, summary, fields)


def _json_line(
    created: float,
    level: str,
    logger: str,
    msg: str,
    fields: dict[str, Any] | None,
    *,
    exc: str | None = None,
) -> str:
    line: dict[str, Any] = {"ts": round(created, 3), "level": level, "logger": logger, "msg": msg}
    if fields:
        line.update(fields)
    if exc:
        line["exc"] = exc
    return json.dumps(line, separators=(",", ":"))


class ConsoleFormatter(logging.Formatter):
    """``asctime level logger message``, the date formatted once per second."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return self._when(record.created)

    def request(self, summary: str, fields: dict[str, Any], created: float) -> str:
        """A request line as :meth:`format` would write its record."""
        return f"{self._when(created)} INFO {access.name} {summary}"

    def _when(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        return f"{self._stamp},{int((created - second) * 1000):03d}"


class BatchedStreamHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes INFO and below together, at most :data:`FLUSH_S` late.

    Outside a running event loop (or from another thread) every line is written at once.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._pending: list[str] = []

    def queue(self, line: str) -> None:
        """Queue a line formatted already (written with the next batch)."""
        self._pending.append(line)
        if len(self._pending) >= MAX_PENDING:
            self.flush()
        elif len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_later(FLUSH_S, self.flush)
            except RuntimeError:  # no loop in this thread: nobody would flush later
                self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        """Queue an INFO line; write a warning or error (and what is queued) now."""
        if record.levelno > logging.INFO:
            self.flush()
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.queue(line)

    def flush(self) -> None:
        """Write what is queued, then flush the stream."""
        with self.lock or _NO_LOCK:
            if self._pending:
                text = "\n".join(self._pending) + "\n"
                self._pending = []
                try:
                    self.stream.write(text)
                except Exception:  # a closed or broken stream: as logging does, carry on
                    return
            super().flush()


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()


def configure(env: Mapping[str, str]) -> None:
    """``LLM_EDGE_LOG_LEVEL`` (INFO) and ``LLM_EDGE_LOG_FORMAT`` (``console`` or ``json``)."""
    handler = BatchedStreamHandler()
    if env.get("LLM_EDGE_LOG_FORMAT", "console") == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ConsoleFormatter())
    logging.basicConfig(level=env.get("LLM_EDGE_LOG_LEVEL", "INFO"), handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise


def _direct() -> BatchedStreamHandler | None:
    """The handler request lines may be queued on directly: the one :func:`configure`
    installed, while nothing else (a filter, another handler) would see the record."""
    root = logging.getLogger()
    if len(root.handlers) != 1 or access.handlers or access.filters or root.filters:
        return None
    handler = root.handlers[0]
    if not isinstance(handler, BatchedStreamHandler) or handler.filters:
        return None
    if handler.level > logging.INFO or not access.propagate:
        return None
    return handler


def request_line(fields: dict[str, Any], started: float) -> None:
    """The one log line of a finished request (``fields`` must hold no prompt, PII or key).

    Under :func:`configure`'s handler the line is formatted and queued here: a log record,
    its handler lookups and locks were most of the line's cost.
    """
    if not access.isEnabledFor(logging.INFO):
        return
    fields["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
    summary = " ".join(f"{k}={v}" for k, v in fields.items())
    handler = _direct()
    formatter = handler.formatter if handler is not None else None
    if handler is not None and isinstance(formatter, ConsoleFormatter | JsonFormatter):
        handler.queue(formatter.request(summary, fields, time.time()))
        return
    access.info(summary, extra={"fields": fields})
