"""The Anthropic Messages API on any provider.

An adapter whose upstream speaks the Messages API implements
:class:`~workers.base.MessagesProvider` itself and passes requests through
(:class:`~workers.anthropic.AnthropicProvider`). Any other provider gets
:class:`TranslatedMessages`: the request is translated to chat completions
(:mod:`workers.messages_to_chat`, a clear 400 for what cannot be carried), the provider's own
chat call runs, and its answer is translated back (:mod:`workers.messages_from_chat`); token
counts are estimated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from schemas import ChatCompletion
from workers.base import Event, MessagesProvider, Provider, ProviderRequest, Relayed
from workers.errors import CannotCarry
from workers.messages_from_chat import EventWriter, message_from_completion
from workers.messages_to_chat import estimate_tokens, to_chat_request
from workers.split import split_chunk

__all__ = ["TranslatedMessages", "messages_api"]

_encoder = msgspec.json.Encoder()
_completion = msgspec.json.Decoder(ChatCompletion)


class TranslatedMessages:
    """The Messages API served by a chat-completions provider.

    Args:
        provider: the chat-completions adapter.
    """

    def __init__(self, provider: Provider) -> None:
        self._provider = provider

    def _chat(self, request: ProviderRequest) -> ProviderRequest:
        """The provider's call for a Messages request.

        Raises:
            ProviderError: ``bad_request`` naming a field that cannot be carried.
            msgspec.MsgspecError: the body is not a Messages request.
        """
        messages = request.messages
        try:
            body = to_chat_request(messages, set(request.fields), stream=request.stream)
        except CannotCarry as exc:
            raise exc.refusal(self._provider.name, "the chat-completions API") from None
        return ProviderRequest(
            _encoder.encode(body),
            upstream_model=request.upstream_model,
            timeout_s=request.timeout_s,
            request_id=request.request_id,
            upstream_headers=request.upstream_headers,
        )

    async def complete_messages(self, request: ProviderRequest) -> bytes:
        """The provider's completion, as a ``message``."""
        answer = await self._provider.complete(self._chat(request))
        completion = _completion.decode(answer)
        return _encoder.encode(message_from_completion(completion, request.messages.model))

    async def stream_messages(self, request: ProviderRequest) -> AsyncIterator[Event]:
        """The provider's chunks, as Anthropic events (a huge chunk cut first, so no event
        outgrows a NATS message: :mod:`workers.split`)."""
        writer = EventWriter(request.messages.model)
        async for item in self._provider.stream(self._chat(request)):
            chunk = item.chunk if isinstance(item, Relayed) else item
            for piece in split_chunk(chunk):
                for name, data in writer.chunk(piece):
                    yield Event(name, _encoder.encode(data))
        for name, data in writer.finish():
            yield Event(name, _encoder.encode(data))

    async def count_tokens(self, request: ProviderRequest) -> tuple[bytes, bool]:
        """An estimate: the provider has no way to count Anthropic's tokens."""
        return _encoder.encode({"input_tokens": estimate_tokens(request.messages)}), False


def messages_api(provider: Provider) -> MessagesProvider:
    """How ``provider`` serves the Messages API: natively, or by translation."""
    if isinstance(provider, MessagesProvider):
        return provider
    return TranslatedMessages(provider)
