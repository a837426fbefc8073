"""OpenAI and OpenAI-compatible upstreams (vLLM, Ollama, Groq, Together, OpenRouter ...).

One adapter serves both: they differ only in base URL, key and extra headers.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from schemas import ChatCompletion
from workers.base import ProviderRequest
from workers.config import ProviderConfig
from workers.errors import ErrorKind, ProviderError, kind_for_status

__all__ = ["OpenAIProvider", "parse_retry_after"]

_completion_decoder = msgspec.json.Decoder(ChatCompletion)
_error_decoder = msgspec.json.Decoder(dict[str, Any])


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (delta-seconds form)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue
    return None


class OpenAIProvider:
    """Chat completions against an OpenAI-shaped API.

    Args:
        config: the provider's settings.
        client: a pooled client, shared by every call of this worker.
        api_key: the key, read from the worker's environment by the caller; never logged.
    """

    def __init__(
        self, config: ProviderConfig, client: httpx.AsyncClient, api_key: str | None
    ) -> None:
        self.name = config.name
        self._config = config
        self._client = client
        self._api_key = api_key
        self._url = f"{config.base_url}/chat/completions"
        self._headers = {"content-type": "application/json", **config.headers}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"

    def _payload(self, request: ProviderRequest) -> bytes:
        """The caller's body with the upstream model, unknown fields kept."""
        body: dict[str, Any] = msgspec.json.decode(request.body)
        body["model"] = request.upstream_model
        body.pop("stream", None)
        body.pop("stream_options", None)
        return msgspec.json.encode(body)

    async def complete(self, request: ProviderRequest) -> bytes:
        """POST ``/chat/completions``; return the upstream ``chat.completion`` bytes."""
        headers = self._headers
        if request.request_id:
            headers = {**headers, "x-client-request-id": request.request_id}
        timeout = min(request.timeout_s, self._config.timeout_s)
        try:
            response = await self._client.post(
                self._url, content=self._payload(request), headers=headers, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise self._error(exc) from exc
        if response.status_code >= 400:
            raise self._error(response)
        try:
            _completion_decoder.decode(response.content)
        except msgspec.MsgspecError as exc:
            raise self._error(exc) from exc
        return response.content

    def _error(self, failure: httpx.Response | Exception) -> ProviderError:
        """Map every upstream failure to a :class:`ProviderError` (the only place that does)."""
        if isinstance(failure, httpx.TimeoutException):
            return ProviderError(self.name, ErrorKind.TIMEOUT, "upstream timed out")
        if isinstance(failure, httpx.HTTPError):
            return ProviderError(
                self.name, ErrorKind.CONNECTION, f"{type(failure).__name__}: {failure}"
            )
        if isinstance(failure, Exception):
            return ProviderError(
                self.name, ErrorKind.INVALID_RESPONSE, f"unreadable upstream response: {failure}"
            )
        return ProviderError(
            self.name,
            kind_for_status(failure.status_code),
            self._scrub(_upstream_message(failure)),
            upstream_status=failure.status_code,
            retry_after=parse_retry_after(failure.headers),
        )

    def _scrub(self, text: str) -> str:
        """Remove our key from anything the upstream echoes back."""
        return text.replace(self._api_key, "***") if self._api_key else text

    async def aclose(self) -> None:
        """The client belongs to the caller; nothing of our own to release."""


def _upstream_message(response: httpx.Response) -> str:
    """OpenAI's ``{"error": {"message"}}``, or the start of whatever body came back."""
    try:
        body = _error_decoder.decode(response.content)
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except msgspec.MsgspecError:
        pass
    return response.text[:300] or response.reason_phrase
