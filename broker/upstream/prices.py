"""What an answer costs: the token kinds a provider bills apart, a deployment's price table,
and the service tiers that change it.

Providers bill input tokens at up to four rates: plain input, input read from their prompt
cache (OpenAI's ``cached_tokens``, Anthropic's ``cache_read_input_tokens``), and input written
to it (Anthropic's ``cache_creation_input_tokens``, at one rate for five-minute entries and
another for one-hour entries). A service tier (OpenAI's ``flex`` and ``priority``, a batch)
changes the rates. :class:`Prices` holds one set of rates and :meth:`Prices.cost` is the one
cost formula; a deployment keeps its base rates and a :class:`Prices` per tier it names.

A rate left unset is not guessed from a provider's published ratio: cache reads and writes
cost the input price, a one-hour write the five-minute write price, unless configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from edge_runtime.tables import check_keys

__all__ = [
    "DEFAULT_TIER",
    "OTHER_TIER",
    "PRICE_KEYS",
    "TIERS",
    "Prices",
    "Tokens",
    "check_prices",
    "resolve_prices",
    "served_tier",
    "tier_prices",
]

#: The tier of an answer that names none, or names the standard one.
DEFAULT_TIER = "default"
#: Tiers a deployment may price apart (``[...tiers.<name>]``): OpenAI's ``flex``, ``priority``
#: and ``scale``, and ``batch`` for work sent at a provider's batch rate.
TIERS = ("batch", "flex", "priority", "scale")
#: What an answer's tier is counted as when it is none of :data:`TIERS` (metric labels stay
#: few whatever an upstream writes); it is priced at the base rates.
OTHER_TIER = "other"
#: The price keys of a deployment table and of each of its tier tables (USD per 1M tokens).
PRICE_KEYS = (
    "input_price",
    "output_price",
    "cached_input_price",
    "cache_write_price",
    "cache_write_1h_price",
)
#: The words providers use for the standard tier (OpenAI ``default``, Anthropic ``standard``).
_STANDARD = frozenset({"", "auto", "default", "standard", "standard_only"})


class Tokens(msgspec.Struct, frozen=True, kw_only=True):
    """The tokens of one answer, by how they are billed (a struct, not a dataclass: one is
    built for every answer, in 0.1 µs against a frozen dataclass's 2.4 µs).

    Attributes:
        input: every input token, as OpenAI counts ``prompt_tokens`` (cache reads and writes
            included).
        output: completion tokens (reasoning included).
        cached: of ``input``, the tokens read from the provider's prompt cache.
        cache_write: of ``input``, the tokens written to it (any lifetime).
        cache_write_1h: of ``cache_write``, the tokens written for an hour.
    """

    input: int = 0
    output: int = 0
    cached: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0

    @property
    def uncached(self) -> int:
        """Input tokens neither read from nor written to the cache."""
        return max(0, self.input - self.cached - self.cache_write)


@dataclass(frozen=True, slots=True, kw_only=True)
class Prices:
    """One set of rates, USD per 1M tokens, every default resolved."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float = 0.0
    cache_write: float = 0.0
    cache_write_1h: float = 0.0

    def cost(self, tokens: Tokens) -> float:
        """USD for ``tokens`` at these rates: the one cost formula (routing by cost, the
        spend meter, money saved by hits and by cached embeddings all use it)."""
        long_writes = min(tokens.cache_write_1h, tokens.cache_write)
        return (
            tokens.uncached * self.input
            + tokens.cached * self.cached_input
            + (tokens.cache_write - long_writes) * self.cache_write
            + long_writes * self.cache_write_1h
            + tokens.output * self.output
        ) / 1e6


def resolve_prices(raw: Mapping[str, float | None]) -> Prices:
    """Rates from the :data:`PRICE_KEYS` set in ``raw`` (``None``: unset), defaults applied:
    unset cache reads and writes cost the input price, unset one-hour writes the write price."""
    base = raw.get("input_price") or 0.0
    write = _first(raw.get("cache_write_price"), base)
    return Prices(
        input=base,
        output=raw.get("output_price") or 0.0,
        cached_input=_first(raw.get("cached_input_price"), base),
        cache_write=write,
        cache_write_1h=_first(raw.get("cache_write_1h_price"), write),
    )


def _first(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


def _price_values(where: str, raw: Mapping[str, Any]) -> dict[str, float | None]:
    values: dict[str, float | None] = {}
    for key in PRICE_KEYS:
        if raw.get(key) is None:
            values[key] = None
            continue
        try:
            value = float(raw[key])
        except (TypeError, ValueError):
            raise ValueError(f"{where}.{key}: a price is a number") from None
        if value < 0:
            raise ValueError(f"{where}.{key}: prices must be >= 0")
        values[key] = value
    return values


def tier_prices(where: str, base: Mapping[str, Any], tiers: Any) -> tuple[tuple[str, Prices], ...]:
    """The ``tiers`` table of a deployment (``where``): each tier's rates, resolved. A tier
    table overrides the base keys it names; unset keys are then defaulted as
    :func:`resolve_prices` says (so a tier that names only ``input_price`` has its cache
    reads at that price unless the deployment names a ``cached_input_price``).

    Raises:
        ValueError: an unknown tier or key, or a price that is not a number >= 0.
    """
    if tiers is None:
        return ()
    if not isinstance(tiers, Mapping):
        raise ValueError(f"{where}.tiers: a table of tier tables")  # noqa: TRY004  (config)
    base_values = _price_values(where, base)
    out = []
    for name in sorted(tiers):
        if name not in TIERS:
            raise ValueError(f"{where}.tiers: unknown tier {name!r} (one of {', '.join(TIERS)})")
        table = tiers[name]
        if not isinstance(table, Mapping):
            raise ValueError(f"{where}.tiers.{name}: a table of prices")  # noqa: TRY004  (config)
        check_keys(f"{where}.tiers.{name}", table, PRICE_KEYS)
        named = {
            k: v for k, v in _price_values(f"{where}.tiers.{name}", table).items() if v is not None
        }
        out.append((name, resolve_prices({**base_values, **named})))
    return tuple(out)


def check_prices(where: str, raw: Mapping[str, Any]) -> dict[str, float | None]:
    """The base :data:`PRICE_KEYS` of a deployment table, checked (``None``: unset).

    Raises:
        ValueError: a price that is not a number >= 0.
    """
    return _price_values(where, raw)


def served_tier(raw: object) -> str | None:
    """The tier an answer's ``service_tier`` names, as we count it: ``default`` for the
    standard tier, one of :data:`TIERS`, else :data:`OTHER_TIER`; ``None`` when the answer
    names none."""
    if not isinstance(raw, str):
        return None
    word = raw.strip().lower()
    if word in _STANDARD:
        return DEFAULT_TIER
    return word if word in TIERS else OTHER_TIER
