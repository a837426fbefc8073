"""The OpenAI Responses API on any provider.

An adapter whose upstream speaks the Responses API passes requests through
(:class:`~workers.openai.OpenAIProvider` for ``kind = "openai"``). Any other provider gets
:class:`TranslatedResponses`: the request is translated to chat completions
(:mod:`workers.responses_to_chat`, a clear 400 for what cannot be carried), the provider's
own chat call runs, and its answer is translated back (:mod:`workers.responses_from_chat`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from schemas import ChatCompletion
from schemas.codec import decode_json
from schemas.responses import new_id
from workers.base import Event, Provider, ProviderRequest, Relayed, ResponsesProvider
from workers.errors import CannotCarry
from workers.responses_from_chat import ResponseWriter, response_from_completion
from workers.responses_to_chat import to_chat_request
from workers.split import split_chunk

__all__ = ["TranslatedResponses", "responses_api"]

_encoder = msgspec.json.Encoder()
_completion = msgspec.json.Decoder(ChatCompletion)
_fields = msgspec.json.Decoder(dict[str, Any])


class TranslatedResponses:
    """The Responses API served by a chat-completions provider.

    Args:
        provider: the chat-completions adapter.
    """

    def __init__(self, provider: Provider) -> None:
        self._provider = provider

    def _chat(self, request: ProviderRequest, fields: dict[str, Any]) -> ProviderRequest:
        """The provider's call for a Responses request.

        Raises:
            ProviderError: ``bad_request`` naming a field that cannot be carried.
        """
        try:
            body = to_chat_request(fields, stream=request.stream)
        except CannotCarry as exc:
            raise exc.refusal(self._provider.name, "the chat-completions API") from None
        return ProviderRequest(
            _encoder.encode(body),
            upstream_model=request.upstream_model,
            timeout_s=request.timeout_s,
            request_id=request.request_id,
            upstream_headers=request.upstream_headers,
        )

    async def complete_response(self, request: ProviderRequest) -> bytes:
        """The provider's completion, as a ``response`` object."""
        fields = decode_json(_fields, request.body)
        answer = await self._provider.complete(self._chat(request, fields))
        completion = _completion.decode(answer)
        model = str(fields.get("model"))
        return _encoder.encode(response_from_completion(completion, fields, model, new_id("resp")))

    async def stream_response(self, request: ProviderRequest) -> AsyncIterator[Event]:
        """The provider's chunks, as Responses events (a huge chunk cut first, so no event
        outgrows a NATS message: :mod:`workers.split`)."""
        fields = decode_json(_fields, request.body)
        writer = ResponseWriter(fields, str(fields.get("model")), new_id("resp"))
        async for item in self._provider.stream(self._chat(request, fields)):
            chunk = item.chunk if isinstance(item, Relayed) else item
            for piece in split_chunk(chunk):
                for name, data in writer.chunk(piece):
                    yield Event(name, _encoder.encode(data))
        for name, data in writer.finish():
            yield Event(name, _encoder.encode(data))


def responses_api(provider: Provider) -> ResponsesProvider:
    """How ``provider`` serves the Responses API: natively when its upstream speaks it, or
    by translation."""
    if isinstance(provider, ResponsesProvider) and getattr(provider, "native_responses", False):
        return provider
    return TranslatedResponses(provider)
