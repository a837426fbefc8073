"""Google service-account OAuth tokens (the JWT-bearer grant, RFC 7523), for Vertex AI.

google-auth reads the key and signs the assertion (its public ``RSASigner`` and
``jwt.encode``: PKCS#1 and PKCS#8 keys, the key id header, RS256 through ``cryptography``);
the token request itself goes through the worker's upstream client, so it is asynchronous,
bounded by :data:`TOKEN_TIMEOUT_S` and proxied like every other call. google-auth's own
refresh is a blocking HTTP call (its async variant is marked experimental and brings
aiohttp into the worker): one of those on the event loop would stall every call in flight.

A token is fetched once and reused until :data:`REFRESH_MARGIN_S` before it expires; from
then on the next call starts one refresh in the background and still uses the current token,
so no call waits for a token except the first and any after the token actually expired.
Concurrent callers share one fetch. Signing costs about 1 ms of CPU per token (one an hour).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from google.auth import crypt, jwt

from workers.errors import ErrorKind, ProviderError, kind_for_status, transport_error
from workers.h1 import TransportError, UpstreamClient
from workers.upstream_http import read_reply

__all__ = [
    "CLOUD_PLATFORM_SCOPE",
    "DEFAULT_TOKEN_URI",
    "REFRESH_MARGIN_S",
    "TOKEN_TIMEOUT_S",
    "ServiceAccountTokens",
    "load_service_account",
]

log = logging.getLogger(__name__)

#: The scope Vertex AI's calls need.
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: Google's token endpoint, when the key file names none.
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105  (a URL, no secret)
#: A token with less than this left is refreshed (Google's live an hour).
REFRESH_MARGIN_S = 300.0
#: The longest a token request may take, all of it.
TOKEN_TIMEOUT_S = 10.0
_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_ASSERTION_LIFETIME_S = 3600


def load_service_account(path: str) -> dict[str, Any]:
    """Read a service-account key file (read once, when the worker starts).

    Raises:
        ValueError: the file is missing, not JSON, or not a service-account key.
    """
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the service-account key {path}: {exc}") from exc
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ValueError(f"{path} is not a service-account key (type service_account)")
    for key in ("client_email", "private_key"):
        if not info.get(key):
            raise ValueError(f"{path}: the service-account key has no {key}")
    return info


class ServiceAccountTokens:
    """Access tokens for one service account, cached and refreshed ahead of expiry.

    Args:
        provider: the provider's name, for errors.
        info: the service-account key (``client_email``, ``private_key``, ``token_uri``).
        client: the worker's upstream client.
        proxy: the proxy for the token endpoint, if any.
        scope: the OAuth scope asked for.
        timeout_s: the bound of one token request.
        margin_s: refresh when less than this is left.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        provider: str,
        info: Mapping[str, Any],
        client: UpstreamClient,
        *,
        proxy: str | None = None,
        scope: str = CLOUD_PLATFORM_SCOPE,
        timeout_s: float = TOKEN_TIMEOUT_S,
        margin_s: float = REFRESH_MARGIN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider = provider
        try:
            self._signer = crypt.RSASigner.from_service_account_info(info)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            raise ValueError(f"provider {provider}: unusable private key: {exc}") from exc
        self._email = str(info["client_email"])
        self._token_uri = str(info.get("token_uri") or DEFAULT_TOKEN_URI)
        self._client = client
        self._proxy = proxy
        self._scope = scope
        self._timeout = timeout_s
        self._margin = margin_s
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._refresh: asyncio.Task[str] | None = None

    @property
    def token_uri(self) -> str:
        """Where tokens are asked for."""
        return self._token_uri

    async def token(self) -> str:
        """A valid access token (fetched only when none is, or it is about to expire).

        Raises:
            ProviderError: the token endpoint refused (``authentication``) or failed.
        """
        now = self._clock()
        if self._token is not None and now < self._expires_at:
            if now >= self._expires_at - self._margin:
                self._refreshing()  # in the background: this call keeps the current token
            return self._token
        # a caller that gives up must not cancel the fetch the others wait for
        return await asyncio.shield(self._refreshing())

    async def headers(self) -> Mapping[str, str]:
        """The ``authorization`` header for the next call."""
        return {"authorization": f"Bearer {await self.token()}"}

    def rejected(self) -> None:
        """The upstream refused the token: the next call fetches a new one."""
        self._token = None

    def scrub(self, text: str) -> str:
        """Remove the current token from ``text``."""
        return text.replace(self._token, "***") if self._token else text

    def _refreshing(self) -> asyncio.Task[str]:
        if self._refresh is None:
            self._refresh = asyncio.get_running_loop().create_task(self._fetch())
            self._refresh.add_done_callback(self._refreshed)
        return self._refresh

    def _refreshed(self, task: asyncio.Task[str]) -> None:
        self._refresh = None
        if not task.cancelled() and task.exception() is not None:  # retrieved: no warning
            log.warning("provider %s: token refresh failed: %s", self._provider, task.exception())

    def _assertion(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self._email,
            "scope": self._scope,
            "aud": self._token_uri,
            "iat": now,
            "exp": now + _ASSERTION_LIFETIME_S,
        }
        assertion: bytes = jwt.encode(self._signer, claims)  # type: ignore[no-untyped-call]
        return assertion.decode()

    async def _fetch(self) -> str:
        started = self._clock()
        form = urllib.parse.urlencode({"grant_type": _GRANT_TYPE, "assertion": self._assertion()})
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.post(
                    self._token_uri,
                    data=form.encode(),
                    headers={"content-type": "application/x-www-form-urlencoded"},
                    timeout=self._timeout,
                    proxy=self._proxy,
                ) as response:
                    reply = await read_reply(response)
        except (TransportError, TimeoutError) as exc:
            failure = transport_error(self._provider, exc)
            kind = ErrorKind.TIMEOUT if isinstance(exc, TimeoutError) else failure.kind
            raise ProviderError(self._provider, kind, f"token endpoint: {failure.message}") from exc
        try:
            answer = json.loads(reply.body)
        except json.JSONDecodeError:
            answer = {}
        if reply.status != 200 or not isinstance(answer, dict):
            raise self._refused(reply.status, answer)
        token, lifetime = answer.get("access_token"), answer.get("expires_in", 3600)
        if not isinstance(token, str) or not token or not isinstance(lifetime, int | float):
            raise ProviderError(
                self._provider, ErrorKind.INVALID_RESPONSE, "token endpoint: no access_token"
            )
        self._token, self._expires_at = token, started + float(lifetime)
        return token

    def _refused(self, status: int, answer: object) -> ProviderError:
        """A token endpoint's error (RFC 6749 ``error`` / ``error_description``)."""
        detail = answer if isinstance(answer, dict) else {}
        message = str(detail.get("error_description") or detail.get("error") or f"HTTP {status}")
        kind = kind_for_status(status) if status != 200 else ErrorKind.INVALID_RESPONSE
        if kind is ErrorKind.BAD_REQUEST:  # invalid_grant, a revoked key: ours, not the caller's
            kind = ErrorKind.AUTHENTICATION
        return ProviderError(
            self._provider, kind, f"token endpoint: {message}", upstream_status=status
        )
