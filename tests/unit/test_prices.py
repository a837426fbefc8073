"""The price table and the one cost formula: cache reads and writes at their own rates, the
defaults of rates left unset, per-tier rates, and the tier an answer names."""

from __future__ import annotations

from typing import Any

import pytest

from broker.upstream.deployments import Deployment, model_from_mapping
from broker.upstream.prices import Prices, Tokens, served_tier

#: Anthropic Sonnet-like rates: input 3, output 15, cache read 0.30, 5m write 3.75, 1h write 6.
SONNET = {
    "provider": "claude",
    "input_price": 3.0,
    "output_price": 15.0,
    "cached_input_price": 0.3,
    "cache_write_price": 3.75,
    "cache_write_1h_price": 6.0,
}


def deployment(**raw: Any) -> Deployment:
    return model_from_mapping("m", {"deployments": [raw]}).deployments[0]


def test_each_kind_of_token_costs_its_own_rate() -> None:
    """1,000 plain input, 10,000 cache reads, 2,000 writes (500 of them for an hour) and 100
    output tokens cost exactly the sum of each count at its rate."""
    tokens = Tokens(input=13_000, output=100, cached=10_000, cache_write=2_000, cache_write_1h=500)
    cost = deployment(**SONNET).cost(tokens)
    expected = (1_000 * 3.0 + 10_000 * 0.3 + 1_500 * 3.75 + 500 * 6.0 + 100 * 15.0) / 1e6
    assert cost == pytest.approx(expected, rel=1e-12)
    assert tokens.uncached == 1_000


def test_unset_cache_rates_cost_the_input_price() -> None:
    """Without cache rates, reads and writes cost the input price (no guessed discount), and a
    one-hour write costs the five-minute write price when only that is set."""
    plain = deployment(provider="p", input_price=2.0, output_price=8.0)
    tokens = Tokens(input=1_000, output=10, cached=600, cache_write=300, cache_write_1h=100)
    assert plain.cost(tokens) == pytest.approx((1_000 * 2.0 + 10 * 8.0) / 1e6)
    written = deployment(provider="p", input_price=2.0, cache_write_price=2.5)
    assert written.prices() == Prices(
        input=2.0, output=0.0, cached_input=2.0, cache_write=2.5, cache_write_1h=2.5
    )


def test_a_tier_overrides_the_rates_it_names_and_keeps_the_others() -> None:
    """A flex table naming input and output halves those; its cache reads keep the
    deployment's rate; a tier the deployment does not price costs the base rates."""
    d = deployment(**SONNET, tiers={"flex": {"input_price": 1.5, "output_price": 7.5}})
    tokens = Tokens(input=2_000, output=100, cached=1_000)
    assert d.cost(tokens, "flex") == pytest.approx((1_000 * 1.5 + 1_000 * 0.3 + 100 * 7.5) / 1e6)
    assert d.cost(tokens, "priority") == d.cost(tokens) == d.cost(tokens, None)
    assert d.cost(tokens) == pytest.approx((1_000 * 3.0 + 1_000 * 0.3 + 100 * 15.0) / 1e6)


def test_a_tier_that_names_only_input_defaults_its_cache_rates_to_it() -> None:
    """Where the deployment names no cache rate, a tier's cache reads cost the tier's input."""
    d = deployment(provider="p", input_price=4.0, tiers={"batch": {"input_price": 2.0}})
    assert d.prices("batch").cached_input == 2.0
    assert d.prices("batch").cache_write == 2.0
    assert d.prices().cached_input == 4.0


def test_a_deployment_with_only_a_tier_price_is_priced() -> None:
    """A deployment priced only through a tier table still names its cost."""
    assert deployment(provider="p", tiers={"flex": {"input_price": 1.0}}).priced
    assert deployment(provider="p", cached_input_price=0.1).priced
    assert not deployment(provider="p").priced


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"tiers": {"turbo": {"input_price": 1}}}, "unknown tier 'turbo'"),
        ({"tiers": {"flex": {"input": 1}}}, "models.m.deployments[0].tiers.flex: unknown keys"),
        ({"tiers": {"flex": {"input_price": -1}}}, "tiers.flex.input_price: prices must be >= 0"),
        ({"cached_input_price": "cheap"}, "cached_input_price: a price is a number"),
        ({"cache_write_1h_price": -0.5}, "cache_write_1h_price: prices must be >= 0"),
        ({"tiers": {"flex": 3}}, "tiers.flex: a table of prices"),
    ],
)
def test_bad_price_tables_are_refused_naming_the_key(raw: dict[str, Any], message: str) -> None:
    """Unknown tiers and keys, negative prices and non-numbers are configuration errors."""
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        deployment(provider="p", **raw)


@pytest.mark.parametrize(
    ("raw", "tier"),
    [
        (None, None),
        (5, None),
        ("default", "default"),
        ("standard", "default"),
        ("auto", "default"),
        ("Flex", "flex"),
        ("priority", "priority"),
        ("batch", "batch"),
        ("scale", "scale"),
        ("something-new", "other"),
    ],
)
def test_the_tier_an_answer_names_is_counted_under_few_names(raw: object, tier: str | None) -> None:
    """OpenAI's and Anthropic's words for the standard tier are one; unknown words are
    ``other`` (metric labels stay few); an answer that names none has none."""
    assert served_tier(raw) == tier


def test_a_batch_line_costs_the_batch_tier_or_else_the_discounted_base() -> None:
    """A line run on a provider's Batch API is priced at the deployment's ``batch`` tier when
    it names one; without one, at the base rates times ``batch_discount``."""
    tokens = Tokens(input=4_000, output=1_000, cached=1_000)
    tiered = deployment(**SONNET, tiers={"batch": {"input_price": 1.0, "output_price": 5.0}})
    assert tiered.batch_cost(tokens) == pytest.approx(
        (3_000 * 1.0 + 1_000 * 0.3 + 1_000 * 5.0) / 1e6
    )
    plain = deployment(**SONNET)
    assert plain.batch_cost(tokens) == pytest.approx(plain.cost(tokens) * 0.5)
    third = deployment(**SONNET, batch_discount=0.3)
    assert third.batch_cost(tokens) == pytest.approx(plain.cost(tokens) * 0.3)
