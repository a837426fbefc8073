"""The fake OpenAI upstream's background responses, in OpenAI's documented shapes.

``POST /v1/responses`` with ``background: true`` answers at once with a ``queued`` response
and the upstream's own id; ``GET /v1/responses/{id}`` answers ``in_progress`` while the run
is held (:attr:`BackgroundRuns.hold`, or for the first read when nothing holds it), then
``completed``; ``POST /v1/responses/{id}/cancel`` makes it ``cancelled``. An unknown id is a
404 as OpenAI answers it.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BackgroundRun", "BackgroundRuns"]

_PATH = re.compile(r"/responses/([^/]+)(/cancel)?$")


@dataclass
class BackgroundRun:
    """One background response the fake runs."""

    completed: dict[str, Any]
    status: str = "queued"
    reads: int = 0
    cancels: int = 0


@dataclass
class BackgroundRuns:
    """The background responses of one fake upstream.

    Attributes:
        hold: while set up and not set, every read answers ``in_progress``; ``None``: the
            first read answers ``in_progress`` and the next ``completed``.
        runs: upstream id -> run.
        service_tier: the tier a completed response names (``None``: as the fake's
            response has it).
    """

    hold: asyncio.Event | None = None
    service_tier: str | None = None
    runs: dict[str, BackgroundRun] = field(default_factory=dict)
    read: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @staticmethod
    def addressed(path: str) -> tuple[str, bool] | None:
        """(upstream id, whether it is a cancel) for a path naming one response."""
        match = _PATH.search(path)
        return None if match is None else (match.group(1), bool(match.group(2)))

    def create(self, response: dict[str, Any]) -> dict[str, Any]:
        """A new background run that will end as ``response``; its queued response."""
        upstream_id = f"resp_bg_{next(self._ids)}"
        if self.service_tier is not None:
            response = {**response, "service_tier": self.service_tier}
        self.runs[upstream_id] = BackgroundRun(response)
        return self._shown(upstream_id)

    def answer(self, upstream_id: str, cancel: bool) -> tuple[int, dict[str, Any]]:
        """The status and body for a read or a cancel of ``upstream_id``."""
        run = self.runs.get(upstream_id)
        if run is None:
            message = f"Response with id '{upstream_id}' not found."
            error = {"message": message, "type": "invalid_request_error", "param": None}
            return 404, {"error": {**error, "code": None}}
        if cancel:
            run.cancels += 1
            if run.status in ("queued", "in_progress"):
                run.status = "cancelled"
            return 200, self._shown(upstream_id)
        run.reads += 1
        self.read.set()
        if run.status in ("queued", "in_progress"):
            held = self.hold is not None and not self.hold.is_set()
            first = self.hold is None and run.reads == 1
            run.status = "in_progress" if held or first else "completed"
        return 200, self._shown(upstream_id)

    def _shown(self, upstream_id: str) -> dict[str, Any]:
        run = self.runs[upstream_id]
        shown = {**run.completed, "id": upstream_id, "status": run.status, "background": True}
        if run.status != "completed":
            shown.update(output=[], usage=None)
        return shown
