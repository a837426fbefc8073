"""What a worker needs to run a sub-batch on a provider's own Batch API.

An adapter whose provider has one (OpenAI's ``/v1/batches``, Anthropic's
``/v1/messages/batches``, the Gemini API's batch mode) hands out a :class:`ProviderBatches`;
the worker then serves ``llm.provider.<provider>.batch`` (:mod:`workers.batch_service`).
Every call goes through the adapter's pooled client and its one error-mapping function, so a
failed call is a :class:`~workers.errors.ProviderError` like any other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

from workers.errors import ErrorKind, ProviderError
from workers.h1 import TransportError, UpstreamClient
from workers.upstream_http import UpstreamReply, read_reply

__all__ = [
    "BATCH_CALL_TIMEOUT_S",
    "FIND_PAGES",
    "FIRST_LINE_BYTES",
    "BatchHttp",
    "Batched",
    "ProviderBatches",
    "Result",
    "Status",
    "check_window",
    "undecided",
]

#: The longest one Batch API call (an upload, a status, a results download) may take
#: (:data:`schemas.offload.SUBMIT_SETTLE_S` counts on it for the create call).
BATCH_CALL_TIMEOUT_S = 120.0
#: Pages of 100 batches a ``find`` reads at most before it says it cannot tell yet.
FIND_PAGES = 20
#: How much of a results file ``find`` reads to see its first line's ``custom_id``.
FIRST_LINE_BYTES = 4096

#: One line's result: its index in the sub-batch, its chat completion (``None``: it failed),
#: and the provider's error code.
Result: TypeAlias = tuple[int, bytes | None, str]


@dataclass(frozen=True, slots=True)
class Status:
    """A provider batch's state: whether it ended, and the provider's own word for it."""

    ended: bool
    provider_status: str


class ProviderBatches(Protocol):
    """One provider's Batch API, spoken in chat-completions lines."""

    async def submit(self, lines: Iterable[bytes], model: str, tag: str, not_after: float) -> str:
        """Submit our input lines (read once, as the request body is written: a sub-batch of
        200 MB is not held again line by line); the provider's batch id. ``tag`` names the sub-batch
        (:meth:`find` looks for it). A line the provider's API cannot carry is left out (it
        reports no result, so it runs on the normal path). No batch is created after
        ``not_after`` (unix time; :func:`check_window` right before the create call)."""
        ...

    async def status(self, batch_id: str) -> Status:
        """Where the provider's batch is."""
        ...

    async def results(self, batch_id: str) -> Iterator[Result]:
        """Every result the provider reports, ``(i, chat completion or None, error)``, read
        from the downloaded file as the caller takes them (none is kept here)."""
        ...

    async def cancel(self, batch_id: str) -> Status:
        """Ask the provider to stop the batch (its finished lines keep their results)."""
        ...

    async def find(self, tag: str, since: float) -> str | None:
        """The provider batch a ``submit`` under ``tag`` created after ``since`` (unix time),
        or ``None`` when the provider surely holds none.

        Raises:
            ProviderError: the provider cannot tell yet (retryable: ask again later).
        """
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
        self,
        method: str,
        path: str,
        data: bytes | bytearray = b"",
        extra: Mapping[str, str] | None = None,
    ) -> bytes:
        """One call to ``base_url + path`` (or to ``path`` when it is a whole URL); its body.

        Raises:
            ProviderError: the call failed or answered an error status.
        """
        return (await self.exchange(method, path, data, extra)).body

    async def exchange(
        self,
        method: str,
        path: str,
        data: bytes | bytearray = b"",
        extra: Mapping[str, str] | None = None,
    ) -> UpstreamReply:
        """As :meth:`call`, the whole answer (for a header the body does not repeat).

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
        return reply

    async def first_line(self, url: str) -> bytes:
        """The start of a file's first line (at most :data:`FIRST_LINE_BYTES`): a results
        file may hold hundreds of megabytes, and only its first ``custom_id`` is wanted.

        Raises:
            ProviderError: the call failed or answered an error status.
        """
        try:
            async with self.client.request(
                "GET", url, headers=self.headers, timeout=BATCH_CALL_TIMEOUT_S, proxy=self.proxy
            ) as response:
                if response.status >= 400:
                    raise self.error(await read_reply(response))
                head = b""
                while b"\n" not in head and len(head) < FIRST_LINE_BYTES:
                    piece = await response.read_some(FIRST_LINE_BYTES - len(head))
                    if not piece:
                        break
                    head += piece
        except TransportError as exc:
            raise self.error(exc) from exc
        return head.split(b"\n", 1)[0]


def check_window(provider: str, not_after: float) -> None:
    """Refuse to create a provider batch once the broker's submit window has passed (the
    broker may already be looking for it, and would submit it again when not found).

    Raises:
        ProviderError: the window has passed (retryable: the broker submits again later).
    """
    if not_after and time.time() > not_after:
        raise ProviderError(provider, ErrorKind.UNAVAILABLE, "the submit window has passed")


def undecided(provider: str, message: str) -> ProviderError:
    """``find`` cannot tell yet whether the provider holds the batch (ask again later)."""
    return ProviderError(provider, ErrorKind.UNAVAILABLE, message)
