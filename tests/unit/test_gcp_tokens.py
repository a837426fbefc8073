"""Service-account tokens: fetched once, refreshed ahead of expiry in the background, fetched
before the call once expired, shared by concurrent callers, failures mapped (fake clock,
fake token endpoint)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.fake_google import FakeGoogle, running_google
from workers import ErrorKind, ProviderError, http_client
from workers.gcp_auth import ServiceAccountTokens, load_service_account


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def google(tmp_path: Path) -> AsyncIterator[FakeGoogle]:
    async with running_google(tmp_path / "sa.json") as fake:
        yield fake


@pytest.fixture
async def tokens(
    google: FakeGoogle, tmp_path: Path
) -> AsyncIterator[tuple[ServiceAccountTokens, Clock]]:
    clock = Clock()
    async with http_client() as client:
        info = load_service_account(str(tmp_path / "sa.json"))
        yield ServiceAccountTokens("vertex", info, client, clock=clock, timeout_s=5), clock


async def test_a_token_is_reused_until_its_refresh_margin(
    google: FakeGoogle, tokens: tuple[ServiceAccountTokens, Clock]
) -> None:
    """Within its life less the margin, every call gets the first token without a fetch."""
    source, clock = tokens
    assert await source.token() == "ya29.token-1"
    clock.now += 3600 - 301
    assert await source.token() == "ya29.token-1"
    assert google.token_requests == 1
    assert not google.refused


async def test_inside_the_margin_the_old_token_serves_while_one_refresh_runs(
    google: FakeGoogle, tokens: tuple[ServiceAccountTokens, Clock]
) -> None:
    """Inside the margin, callers get the current token at once while a single background
    fetch runs; once it lands, the new token is used."""
    source, clock = tokens
    await source.token()
    google.hold_tokens = asyncio.Event()
    clock.now += 3600 - 299
    got = [await source.token() for _ in range(5)]
    assert got == ["ya29.token-1"] * 5
    await asyncio.wait_for(google.wait_token_requests(2), timeout=5)
    google.hold_tokens.set()
    refresh = source._refresh
    assert refresh is not None
    assert await asyncio.wait_for(asyncio.shield(refresh), timeout=5) == "ya29.token-2"
    assert await source.token() == "ya29.token-2"
    assert google.token_requests == 2


async def test_an_expired_token_is_replaced_before_the_call_and_fetched_once(
    google: FakeGoogle, tokens: tuple[ServiceAccountTokens, Clock]
) -> None:
    """Past its expiry a token is never handed out: concurrent callers wait for one fetch."""
    source, clock = tokens
    await source.token()
    clock.now += 3601
    got = await asyncio.gather(*(source.token() for _ in range(10)))
    assert set(got) == {"ya29.token-2"}
    assert google.token_requests == 2


async def test_a_rejected_token_is_not_used_again(
    google: FakeGoogle, tokens: tuple[ServiceAccountTokens, Clock]
) -> None:
    """After the upstream refused a token, the next call fetches a new one."""
    source, _ = tokens
    await source.token()
    source.rejected()
    assert await source.token() == "ya29.token-2"


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, {"error": "invalid_grant", "error_description": "Invalid JWT"}, "authentication"),
        (401, {"error": "invalid_client"}, "authentication"),
        (503, {"error": "temporarily_unavailable"}, "unavailable"),
        (200, {"token_type": "Bearer"}, "invalid_response"),
    ],
)
async def test_token_endpoint_failures_are_mapped_and_retried_later(
    google: FakeGoogle,
    tokens: tuple[ServiceAccountTokens, Clock],
    status: int,
    body: dict[str, str],
    kind: str,
) -> None:
    """A refused grant is an authentication error (not retryable), an outage is retryable;
    the failure is not cached: the next call asks again."""
    source, _ = tokens
    google.token_failure = (status, body)
    with pytest.raises(ProviderError) as caught:
        await source.token()
    assert caught.value.kind is ErrorKind(kind)
    assert caught.value.retryable is (kind in {"unavailable", "invalid_response"})
    google.token_failure = None
    assert await source.token() == "ya29.token-2"


async def test_a_slow_token_endpoint_times_out(google: FakeGoogle, tmp_path: Path) -> None:
    """A token endpoint that does not answer fails the call as a timeout within its bound."""
    google.hold_tokens = asyncio.Event()
    async with http_client() as client:
        info = load_service_account(str(tmp_path / "sa.json"))
        source = ServiceAccountTokens("vertex", info, client, timeout_s=0.2)
        with pytest.raises(ProviderError) as caught:
            await asyncio.wait_for(source.token(), timeout=5)
    google.hold_tokens.set()
    assert caught.value.kind is ErrorKind.TIMEOUT


def test_a_file_that_is_not_a_service_account_key_is_refused(tmp_path: Path) -> None:
    """Key files are checked when the worker starts, naming what is wrong."""
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"type": "authorized_user", "refresh_token": "x"}))
    with pytest.raises(ValueError, match="not a service-account key"):
        load_service_account(str(user))
    with pytest.raises(ValueError, match="cannot read"):
        load_service_account(str(tmp_path / "missing.json"))
