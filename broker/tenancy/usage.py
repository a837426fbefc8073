"""What an answer reports it used, read from its body in either API's shape.

A ``chat.completion`` (or an embeddings list) carries OpenAI's ``usage`` and, at its top, the
``service_tier`` that served it; an Anthropic ``message`` carries Anthropic's ``usage``, the
tier inside it. Either is read into OpenAI terms (:mod:`schemas.usage`) and into the token
kinds the price table bills (:class:`~broker.upstream.prices.Tokens`). Only ``usage`` and
``service_tier`` are decoded: the rest of the body is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from broker.upstream.prices import Tokens, served_tier
from schemas import Usage
from schemas.usage import cache_counts, usage_from_anthropic, usage_from_responses

__all__ = ["Metered", "anthropic_metered", "metered", "metered_usage", "usage_of"]


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
        return metered_usage(usage_from_responses(reported), raw.service_tier)  # Responses API
    if "input_tokens" in reported or "output_tokens" in reported:  # Anthropic's shape
        return anthropic_metered(reported)
    prompt = _count(reported.get("prompt_tokens"))
    completion = _count(reported.get("completion_tokens"))
    details = reported.get("prompt_tokens_details")
    usage = Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=details if isinstance(details, dict) else None,
    )
    return metered_usage(usage, raw.service_tier)


def anthropic_metered(reported: Mapping[str, Any]) -> Metered:
    """An Anthropic ``usage`` (the tier inside it) read as :func:`metered` reads it."""
    return metered_usage(usage_from_anthropic(reported), reported.get("service_tier"))


def metered_usage(usage: Usage, service_tier: object) -> Metered:
    """A usage already in OpenAI terms and the tier its answer named (as sent: counted by
    :func:`served_tier`), by how its tokens are billed: what a stream's usage, kept as it was
    relayed, is priced from without encoding and decoding its answer again."""
    read, written, written_1h = cache_counts(usage)
    tokens = Tokens(
        input=usage.prompt_tokens,
        output=usage.completion_tokens,
        cached=read,
        cache_write=written,
        cache_write_1h=written_1h,
    )
    return Metered(usage, tokens, served_tier(service_tier))


def usage_of(body: bytes) -> Usage | None:
    """The usage of an answer body in OpenAI terms (see :func:`metered`)."""
    found = metered(body)
    return None if found is None else found.usage
