"""Token usage in both APIs, and how each reads as the other. Pure: no I/O.

OpenAI's ``prompt_tokens`` counts every input token, and ``prompt_tokens_details.cached_tokens``
says how many of them were read from the prompt cache. Anthropic's ``input_tokens`` counts
only the tokens neither read from nor written to the cache; ``cache_read_input_tokens`` and
``cache_creation_input_tokens`` count those (the latter split by lifetime in
``cache_creation.ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``). OpenAI has no
name for cache writes: we write them as ``prompt_tokens_details.cache_write_tokens`` (the name
OpenRouter gives them) and the one-hour part of them as ``cache_write_1h_tokens``.

An answer's service tier is ``service_tier`` at the top of an OpenAI answer (``default``,
``flex``, ``priority`` ...) and in an Anthropic answer's ``usage`` (``standard``,
``priority``, ``batch``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.chat import Usage

__all__ = [
    "CACHED_TOKENS",
    "CACHE_WRITE_1H_TOKENS",
    "CACHE_WRITE_TOKENS",
    "anthropic_tier",
    "anthropic_usage",
    "cache_counts",
    "openai_tier",
    "usage_from_anthropic",
    "usage_from_responses",
]

#: ``prompt_tokens_details`` keys: input tokens read from the cache (OpenAI's own name) ...
CACHED_TOKENS = "cached_tokens"
#: ... written to it, any lifetime (OpenRouter's name; Anthropic's
#: ``cache_creation_input_tokens``) ...
CACHE_WRITE_TOKENS = "cache_write_tokens"
#: ... and, of those, written for an hour (Anthropic's ``ephemeral_1h_input_tokens``).
CACHE_WRITE_1H_TOKENS = "cache_write_1h_tokens"

_READ = "cache_read_input_tokens"
_WRITE = "cache_creation_input_tokens"
#: Anthropic's word for the standard tier, and OpenAI's.
_ANTHROPIC_STANDARD = "standard"
_OPENAI_STANDARD = "default"


def _count(raw: Mapping[str, Any] | None, key: str) -> int:
    value = raw.get(key) if raw else None
    return value if isinstance(value, int) and value > 0 else 0


def usage_from_anthropic(raw: Mapping[str, Any] | None) -> Usage:
    """An Anthropic ``usage`` in OpenAI terms: ``prompt_tokens`` is every input token (cache
    reads and writes included); the cache's share is in ``prompt_tokens_details`` when the
    upstream reported it."""
    raw = raw or {}
    read, write = _count(raw, _READ), _count(raw, _WRITE)
    prompt = _count(raw, "input_tokens") + read + write
    completion = _count(raw, "output_tokens")
    details: dict[str, Any] | None = None
    if _READ in raw or _WRITE in raw:
        details = {CACHED_TOKENS: read, CACHE_WRITE_TOKENS: write}
        creation = raw.get("cache_creation")
        long_writes = (
            _count(creation, "ephemeral_1h_input_tokens") if isinstance(creation, Mapping) else 0
        )
        if long_writes:
            details[CACHE_WRITE_1H_TOKENS] = long_writes
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=details,
    )


def cache_counts(usage: Usage) -> tuple[int, int, int]:
    """``(read, written, written for an hour)`` input tokens of an OpenAI ``usage``."""
    details = usage.prompt_tokens_details
    return (
        _count(details, CACHED_TOKENS),
        _count(details, CACHE_WRITE_TOKENS),
        _count(details, CACHE_WRITE_1H_TOKENS),
    )


def anthropic_usage(usage: Usage | None, tier: str | None = None) -> dict[str, Any]:
    """An OpenAI ``usage`` in Anthropic terms (the inverse of :func:`usage_from_anthropic`),
    with the answer's ``service_tier`` when it named one."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    read, write, long_writes = cache_counts(usage)
    out: dict[str, Any] = {
        "input_tokens": max(0, usage.prompt_tokens - read - write),
        "output_tokens": usage.completion_tokens,
    }
    if usage.prompt_tokens_details and (read or write):
        out[_READ] = read
        out[_WRITE] = write
        if long_writes:
            out["cache_creation"] = {
                "ephemeral_5m_input_tokens": max(0, write - long_writes),
                "ephemeral_1h_input_tokens": long_writes,
            }
    if tier is not None:
        out["service_tier"] = anthropic_tier(tier)
    return out


def openai_tier(tier: object) -> str | None:
    """An Anthropic answer's ``service_tier`` in OpenAI's words (``standard`` is
    ``default``; others as they are)."""
    if not isinstance(tier, str):
        return None
    return _OPENAI_STANDARD if tier == _ANTHROPIC_STANDARD else tier


def anthropic_tier(tier: str) -> str:
    """An OpenAI answer's ``service_tier`` in Anthropic's words (``default`` is
    ``standard``; others as they are)."""
    return _ANTHROPIC_STANDARD if tier == _OPENAI_STANDARD else tier


def usage_from_responses(raw: Mapping[str, Any] | None) -> Usage:
    """A Responses API ``usage`` in chat terms: its ``input_tokens`` count every input token,
    as ``prompt_tokens`` do, and its cache reads are ``input_tokens_details.cached_tokens``
    (its cache writes, when a chat provider's answer was translated, are there under the
    chat usage's names)."""
    raw = raw or {}
    prompt, completion = _count(raw, "input_tokens"), _count(raw, "output_tokens")
    given = raw.get("input_tokens_details")
    given = given if isinstance(given, Mapping) else None
    details = {
        name: count
        for name in (CACHED_TOKENS, CACHE_WRITE_TOKENS, CACHE_WRITE_1H_TOKENS)
        if (count := _count(given, name))
    }
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=details or None,
    )
