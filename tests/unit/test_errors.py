"""The broker's error tree: every failure a caller can see has its class in broker/errors.py."""

from __future__ import annotations

import textwrap

import msgspec
import pytest

from broker import errors
from broker.config import Config
from broker.prepare import RequestPreparer
from broker.tenancy import budget
from broker.tenancy.limits import Scope, Usage, rate_limited
from broker.tenancy.tenants import hash_key
from broker.upstream import resilience
from edge_bridge import app
from schemas import headers


@pytest.mark.parametrize(
    ("error", "parent", "status", "code"),
    [
        (errors.BudgetExceeded, errors.BrokerError, 402, "budget_exceeded"),
        (errors.PiiBlocked, errors.InvalidRequest, 400, "pii_detected"),
        (errors.AllDeploymentsOpen, errors.NoProvider, 503, "all_deployments_unavailable"),
    ],
)
def test_error_tree_places_budget_pii_and_open_breakers(
    error: type[errors.BrokerError], parent: type[errors.BrokerError], status: int, code: str
) -> None:
    """402 budget, PII-blocked 400 and all-deployments-open 503 are branches of the tree."""
    failure = error("why", retry_after=3)
    assert isinstance(failure, parent)
    assert (failure.status, failure.code) == (status, code)
    assert msgspec.json.decode(failure.envelope())["error"]["code"] == code
    assert failure.extra_headers == {headers.RETRY_AFTER: "3"}


def test_wings_raise_the_trees_classes() -> None:
    """The budget and resilience wings raise the classes of broker/errors.py, not their own."""
    assert budget.BudgetExceeded is errors.BudgetExceeded
    assert resilience.AllDeploymentsOpen is errors.AllDeploymentsOpen


def test_blocked_pii_raises_the_trees_class() -> None:
    """A tenant with pii = "block" gets broker.errors.PiiBlocked for a request with an email."""
    config = Config.from_toml(
        textwrap.dedent(f"""
        [providers.mock]
        kind = "mock"
        [models.mock]
        deployments = [{{ provider = "mock" }}]
        [tenants.acme]
        keys = ["{hash_key("k-acme")}"]
        pii = "block"
        """)
    )
    preparer = RequestPreparer(config, None, 1_000_000, lambda: 0.0, lambda: "id")
    body = msgspec.json.encode(
        {"model": "mock", "messages": [{"role": "user", "content": "mail a@example.com"}]}
    )
    with pytest.raises(errors.PiiBlocked):
        preparer.prepare(body, {headers.AUTHORIZATION: "Bearer k-acme"})


def test_rate_limit_headers_are_named_once_and_reach_http() -> None:
    """A tenant's 429 carries every x-ratelimit-* header, and the bridge copies each of them."""
    refused = rate_limited(
        Usage(allowed=False, requests=3, tokens=90, reset_s=12.5), Scope("acme", 3, 100)
    )
    assert refused.extra_headers == {
        headers.RETRY_AFTER: "13",
        headers.RATELIMIT_LIMIT_REQUESTS: "3",
        headers.RATELIMIT_REMAINING_REQUESTS: "0",
        headers.RATELIMIT_RESET_REQUESTS: "13s",
        headers.RATELIMIT_LIMIT_TOKENS: "100",
        headers.RATELIMIT_REMAINING_TOKENS: "10",
        headers.RATELIMIT_RESET_TOKENS: "13s",
    }
    assert set(headers.RATELIMIT) <= set(app._EXPOSE)
