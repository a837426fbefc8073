"""What a worker needs to run a sub-batch on a provider's own Batch API.

An adapter whose provider has one (OpenAI's ``/v1/batches``, Anthropic's
``/v1/messages/batches``) hands out a :class:`ProviderBatches`; the worker then serves
``llm.provider.<provider>.batch`` (:mod:`workers.batch_service`). Every call goes through the
adapter's pooled client and its one error-mapping function, so a failed call is a
:class:`~workers.errors.ProviderError` like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from workers.errors import ProviderError
from workers.h1 import TransportError, UpstreamClient
from workers.upstream_http import UpstreamReply, read_reply

__all__ = ["BATCH_CALL_TIMEOUT_S", "BatchHttp", "Batched", "ProviderBatches", "Status"]

#: The longest one Batch API call (an upload, a status, a results download) may take.
BATCH_CALL_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Status:
    """A provider batch's state: whether it ended, and the provider's own word for it."""

    ended: bool
    provider_status: str


class ProviderBatches(Protocol):
    """One provider's Batch API, spoken in chat-completions lines."""

    async def submit(self, lines: list[bytes], model: str, tag: str) -> str:
        """Submit our input lines (``custom_id`` ``r<i>`` upstream for line ``i``); the
        provider's batch id. ``tag`` names the sub-batch (kept as metadata where the provider
        keeps any). A line the provider's API cannot carry is left out (it reports no result,
        so it runs on the normal path)."""
        ...

    async def status(self, batch_id: str) -> Status:
        """Where the provider's batch is."""
        ...

    async def results(self, batch_id: str) -> list[tuple[int, bytes | None, str]]:
        """Every result the provider reports: ``(i, chat completion or None, error)``."""
        ...

    async def cancel(self, batch_id: str) -> Status:
        """Ask the provider to stop the batch (its finished lines keep their results)."""
        ...


@runtime_checkable
class Batched(Protocol):
    """An adapter whose provider has a Batch API."""

    def batches(self) -> ProviderBatches | None:
        """The provider's Batch API (``None``: this kind of provider has none)."""
        ...


@dataclass(frozen=True, slots=True)
class BatchHttp:
    """The adapter's client, base URL, headers and error mapping, for the Batch API calls.

    Attributes:
        base_url: the API root (``.../v1``).
        client: the worker's pooled client.
        headers: the adapter's headers (key included; never logged).
        proxy: the adapter's proxy.
        error: the adapter's one mapping of a failed call to a ``ProviderError``.
    """

    base_url: str
    client: UpstreamClient
    headers: Mapping[str, str]
    proxy: str | None
    error: Callable[[UpstreamReply | Exception], ProviderError]

    async def call(
        self, method: str, path: str, data: bytes = b"", extra: Mapping[str, str] | None = None
    ) -> bytes:
        """One call to ``base_url + path`` (or to ``path`` when it is a whole URL).

        Raises:
            ProviderError: the call failed or answered an error status.
        """
        url = path if "://" in path else f"{self.base_url}{path}"
        try:
            async with self.client.request(
                method,
                url,
                data=data,
                headers={**self.headers, **(extra or {})},
                timeout=BATCH_CALL_TIMEOUT_S,
                proxy=self.proxy,
            ) as response:
                reply = await read_reply(response)
        except TransportError as exc:
            raise self.error(exc) from exc
        if reply.status >= 400:
            raise self.error(reply)
        return reply.body
