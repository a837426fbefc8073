"""Per-request cache control: the ``Cache-Control`` header of a NATS or HTTP request."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["NO_DIRECTIVES", "CacheDirectives", "parse_cache_control"]


@dataclass(frozen=True, slots=True)
class CacheDirectives:
    """Per-request cache control (``Cache-Control`` header, NATS or HTTP)."""

    no_cache: bool = False  # skip the read, still write
    no_store: bool = False  # do not write
    max_age: float | None = None  # TTL for the entry this request writes


NO_DIRECTIVES = CacheDirectives()
_MAX_AGE = re.compile(r"max-age\s*=\s*(\d+)")


def parse_cache_control(value: str | None) -> CacheDirectives:
    """Parse ``no-cache``, ``no-store`` and ``max-age=N`` (other directives are ignored)."""
    if not value:
        return NO_DIRECTIVES
    lowered = value.lower()
    match = _MAX_AGE.search(lowered)
    return CacheDirectives(
        no_cache="no-cache" in lowered,
        no_store="no-store" in lowered,
        max_age=float(match.group(1)) if match else None,
    )
