"""What a provider's reply headers say about its limits.

Workers pass back the upstream's rate-limit headers (OpenAI's ``x-ratelimit-*``, and
``Retry-After`` on a 429): the limits per minute, what is left of them, and when they reset
(``1s``, ``6m0s``, ``20ms``). :func:`read_limits` turns them into a :class:`Learned`: the
limits become the deployment's when the configuration names none, and "nothing left" (or a
429 that says how long to wait) pauses the deployment until the reset, on every broker
(through the shared statistics). A 429 that names no wait pauses nothing: the retry backoff
and the breaker handle it, as any failure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from schemas import headers

__all__ = ["LIMIT_HEADERS", "Learned", "parse_reset", "read_limits"]

#: The upstream headers workers pass back for this.
LIMIT_HEADERS = (*headers.RATELIMIT, headers.RETRY_AFTER)
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Learned:
    """What one reply told about its deployment's limits.

    Attributes:
        rpm, tpm: the limits per minute, when the provider names them.
        pause_s: send nothing more for this long (a 429, or nothing left until a reset).
    """

    rpm: int | None = None
    tpm: int | None = None
    pause_s: float = 0.0


def parse_reset(value: str) -> float | None:
    """Seconds of a reset value (``6m0s``, ``1.5s``, ``20ms``, or a bare number of seconds)."""
    text = value.strip().lower()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        return None
    return sum(float(number) * _SCALE[unit] for number, unit in parts)


def _int(hdrs: Mapping[str, str], name: str) -> int | None:
    raw = hdrs.get(name)
    if raw is None:
        return None
    try:
        value = int(float(raw))
    except ValueError:
        return None
    return value if value >= 0 else None


def read_limits(hdrs: Mapping[str, str], status: int) -> Learned | None:
    """What ``hdrs`` of a reply of ``status`` say (``None``: nothing)."""
    rpm = _int(hdrs, headers.RATELIMIT_LIMIT_REQUESTS)
    tpm = _int(hdrs, headers.RATELIMIT_LIMIT_TOKENS)
    pause = 0.0
    for remaining, reset in (
        (headers.RATELIMIT_REMAINING_REQUESTS, headers.RATELIMIT_RESET_REQUESTS),
        (headers.RATELIMIT_REMAINING_TOKENS, headers.RATELIMIT_RESET_TOKENS),
    ):
        if _int(hdrs, remaining) == 0:
            pause = max(pause, parse_reset(hdrs.get(reset, "")) or 0.0)
    if status == 429:
        retry_after = hdrs.get(headers.RETRY_AFTER)
        waited = parse_reset(retry_after) if retry_after else None
        pause = max(pause, waited or 0.0)
    if rpm is None and tpm is None and not pause:
        return None
    return Learned(rpm=rpm or None, tpm=tpm or None, pause_s=pause)
