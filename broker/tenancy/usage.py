"""What an answer reports it used, read from its body in either API's shape.

A ``chat.completion`` (or an embeddings list) carries OpenAI's ``usage`` and, at its top, the
``service_tier`` that served it; an Anthropic ``message`` carries Anthropic's ``usage``, the
tier inside it. Either is read into OpenAI terms (:mod:`schemas.usage`) and into the token
kinds the price table bills (:class:`~broker.upstream.prices.Tokens`). Only ``usage`` and
``service_tier`` are decoded: the rest of the body is skipped.
"""

from __future__ import annotations

from typing import Any

import msgspec

from broker.upstream.prices import Tokens, served_tier
from schemas import Usage
from schemas.usage import cache_counts, usage_from_anthropic

__all__ = ["Metered", "metered", "usage_of"]


class Metered(msgspec.Struct, frozen=True):
    """An answer's usage (a struct for the reason :class:`Tokens` is one).

    Attributes:
        usage: in OpenAI terms (``prompt_tokens`` counts every input token; the cache's share
            is in ``prompt_tokens_details``).
        tokens: by how they are billed.
        tier: the service tier that served it, as counted (:func:`served_tier`), or ``None``
            when the answer names none.
    """

    usage: Usage
    tokens: Tokens
    tier: str | None


class _UsageOnly(msgspec.Struct):
    usage: dict[str, Any] | None = None
    service_tier: Any = None


_decoder = msgspec.json.Decoder(_UsageOnly)


def _count(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def metered(body: bytes) -> Metered | None:
    """The usage of a ``chat.completion``, an embeddings list or an Anthropic ``message``
    body; ``None`` when it reports none."""
    try:
        raw = _decoder.decode(body)
    except msgspec.MsgspecError:
        return None
    reported = raw.usage
    if reported is None:
        return None
    if "input_tokens_details" in reported or "output_tokens_details" in reported:
        usage = _from_responses(reported)  # the Responses API's shape
        tier = served_tier(raw.service_tier)
    elif "input_tokens" in reported or "output_tokens" in reported:  # Anthropic's shape
        usage = usage_from_anthropic(reported)
        tier = served_tier(reported.get("service_tier"))
    else:
        prompt = _count(reported.get("prompt_tokens"))
        completion = _count(reported.get("completion_tokens"))
        details = reported.get("prompt_tokens_details")
        usage = Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_tokens_details=details if isinstance(details, dict) else None,
        )
        tier = served_tier(raw.service_tier)
    read, written, written_1h = cache_counts(usage)
    tokens = Tokens(
        input=usage.prompt_tokens,
        output=usage.completion_tokens,
        cached=read,
        cache_write=written,
        cache_write_1h=written_1h,
    )
    return Metered(usage, tokens, tier)


def _from_responses(reported: dict[str, Any]) -> Usage:
    """A Responses API ``usage`` in chat terms: its ``input_tokens`` count every input token,
    as ``prompt_tokens`` do, and its cache reads are ``input_tokens_details.cached_tokens``."""
    prompt = _count(reported.get("input_tokens"))
    completion = _count(reported.get("output_tokens"))
    details = reported.get("input_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details={"cached_tokens": cached} if cached else None,
    )


def usage_of(body: bytes) -> Usage | None:
    """The usage of an answer body in OpenAI terms (see :func:`metered`)."""
    found = metered(body)
    return None if found is None else found.usage
