"""The JWT issuer's public keys (its JWKS), from a file or a URL, kept by ``kid``.

Loading never blocks the event loop: a URL is fetched with ``httpx`` (async, bounded by
``jwks_timeout_s``), a file is read in a thread. The keys are read at start, again every
``jwks_refresh_s``, and at once when a token names a ``kid`` the set lacks (the issuer
rotated its keys) — but at most once per ``jwks_min_refresh_s``, so tokens with made-up
``kid`` values cannot make the broker hammer the issuer; callers that need the same refresh
share one fetch. A failed refresh keeps the keys already held; with none held, JWT callers
are refused with 503 (fail closed, like run-time keys Redis cannot give).

    JwksError           a load failed (the message says why; the caller logs it)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import msgspec
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key

__all__ = ["MAX_JWKS_BYTES", "JwksError", "KeySource"]

log = logging.getLogger("llm_edge.broker")

#: A JWKS larger than this is refused (an issuer publishes a handful of keys: a few KiB).
MAX_JWKS_BYTES = 1024 * 1024
_decoder = msgspec.json.Decoder(dict[str, Any])


class JwksError(Exception):
    """The key set could not be loaded: unreachable, too slow, too big or not a JWKS."""


def parse_jwks(data: bytes) -> dict[str, Key]:
    """The signing keys of a JWKS document, by ``kid`` (``""`` for a key without one).

    Keys this broker cannot use (encryption keys, unknown key types) are skipped, so one
    exotic key does not take the issuer's other keys away.

    Raises:
        JwksError: the document is not a JWKS, or holds no usable key.
    """
    if len(data) > MAX_JWKS_BYTES:
        raise JwksError(f"the JWKS is over {MAX_JWKS_BYTES} bytes")
    try:
        entries = _decoder.decode(data).get("keys")
    except msgspec.DecodeError as exc:
        raise JwksError(f"the JWKS is not JSON: {exc}") from None
    if not isinstance(entries, list):
        raise JwksError('the JWKS has no "keys" list')
    keys: dict[str, Key] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = JWKRegistry.import_key(entry)
        except (JoseError, ValueError, TypeError) as exc:
            log.warning("JWKS: skipped key %r: %s", entry.get("kid"), exc)
            continue
        if not key.is_private:  # a published private key is a mistake; never sign with it
            keys[str(entry.get("kid", ""))] = key
    if not keys:
        raise JwksError("the JWKS holds no usable signing key")
    return keys


class KeySource:
    """The issuer's keys, loaded and refreshed as the module says.

    Args:
        url: where the JWKS is published (fetched with ``client``), or
        file: a JWKS file (exactly one of the two).
        timeout_s: bound on one load.
        min_refresh_s: no more than one refresh per this many seconds for unknown ``kid``s.
        clock: monotonic seconds.
        client: the HTTP client for ``url`` (made here when not given; closed by
            :meth:`aclose` only then).
    """

    def __init__(
        self,
        *,
        url: str | None,
        file: Path | None,
        timeout_s: float,
        min_refresh_s: float,
        clock: Callable[[], float],
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if (url is None) == (file is None):
            raise ValueError("a key source needs a JWKS url or a file, not both")
        self._url = url
        self._file = file
        self._timeout_s = timeout_s
        self._min_refresh_s = min_refresh_s
        self._clock = clock
        self._own_client = client is None and url is not None
        self._client = client if client is not None or url is None else httpx.AsyncClient()
        self._last_try: float | None = None
        self._loading: asyncio.Task[bytes] | None = None
        self._raw = b""
        #: The keys by ``kid``; empty until a load succeeds.
        self.keys: Mapping[str, Key] = {}
        #: Bumped whenever the set changes (the verified-token cache is dropped then).
        self.version = 0

    @property
    def loaded(self) -> bool:
        """Whether any key was ever loaded."""
        return bool(self.keys)

    async def load(self) -> None:
        """Read the keys now (sharing a load already under way).

        Raises:
            JwksError: the load failed; the keys held before are kept.
        """
        task = self._loading
        if task is None or task.done():
            self._last_try = self._clock()
            task = self._loading = asyncio.ensure_future(self._read())
            # retrieved even when every waiter was cancelled: no "never retrieved" warning
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        data = await asyncio.shield(task)
        if data != self._raw:
            self.keys = parse_jwks(data)  # raises before anything is replaced
            self._raw = data
            self.version += 1

    async def refresh_for(self, kid: str) -> bool:
        """Make sure ``kid`` is known, refreshing once if the rate bound allows.

        Returns:
            Whether the set now holds ``kid``.

        Raises:
            JwksError: a refresh was due and failed.
        """
        if kid in self.keys:
            return True
        due = self._last_try is None or self._clock() - self._last_try >= self._min_refresh_s
        if due or (self._loading is not None and not self._loading.done()):
            await self.load()
        return kid in self.keys

    async def run(self, every_s: float) -> None:
        """Refresh every ``every_s`` seconds until cancelled (a failure keeps the keys)."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.load()
            except JwksError as exc:
                log.warning("JWT issuer keys not refreshed (%s); keeping %d", exc, len(self.keys))

    async def aclose(self) -> None:
        """Close the HTTP client made here."""
        if self._own_client and self._client is not None:
            await self._client.aclose()

    async def _read(self) -> bytes:
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._file is not None:
                    data = await asyncio.to_thread(self._file.read_bytes)
                else:
                    data = await self._fetch()
        except TimeoutError:
            raise JwksError(f"reading the JWKS took over {self._timeout_s:g} s") from None
        except OSError as exc:
            raise JwksError(f"cannot read the JWKS file: {exc}") from None
        if len(data) > MAX_JWKS_BYTES:
            raise JwksError(f"the JWKS is over {MAX_JWKS_BYTES} bytes")
        return data

    async def _fetch(self) -> bytes:
        assert self._client is not None
        assert self._url is not None
        try:
            response = await self._client.get(self._url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise JwksError(f"cannot fetch the JWKS: {exc!r}") from None
        if response.status_code != 200:
            raise JwksError(f"the JWKS URL answered {response.status_code}")
        return response.content
