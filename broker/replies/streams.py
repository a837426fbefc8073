"""A streamed answer in its caller's API: what the pipeline keeps of it as it relays it, and
how a stored answer is streamed again.

A stream's pieces reach the caller as the worker sent them; the broker decodes each one only
to add the answer up (what the cache stores and the meter prices): chat chunks with
:class:`~broker.replies.assemble.StreamAssembler`, Anthropic events with
:class:`~broker.replies.message_stream.MessageAssembler`, Responses events by their last
event (which carries the whole response). An answer that cannot be rebuilt
from its pieces (a delta holding a field the broker does not know) is priced but not stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from broker.cache.response import CachedReply
from broker.replies.assemble import StreamAssembler, replay_chunks
from broker.replies.message_stream import MessageAssembler
from broker.replies.message_stream import replay_events as replay_messages
from broker.request import Piece, Prepared
from schemas import ChatCompletion, StreamEnd, Usage
from schemas.api import Api
from schemas.codec import decode_chunk
from schemas.response_events import FINAL_EVENTS, replay_events
from schemas.responses import response_usage
from schemas.usage import usage_from_responses

__all__ = ["Assembled", "StreamLog", "replay", "stream_log"]

_encoder = msgspec.json.Encoder()
_completion_decoder = msgspec.json.Decoder(ChatCompletion)
_object_decoder: msgspec.json.Decoder[dict[str, Any]] = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True, slots=True)
class Assembled:
    """What a finished stream adds up to.

    Attributes:
        body: the whole answer (a ``chat.completion`` or an Anthropic ``message``).
        splits: where the stream cut its texts (replays cut them there again).
        whole: the body is the whole answer (else it holds only what the meter reads).
    """

    body: bytes
    splits: list[list[int]]
    whole: bool


class StreamLog(Protocol):
    """Keeps a stream's answer while its pieces are relayed."""

    @property
    def usage(self) -> Usage | None:
        """The usage reported so far."""
        ...

    @property
    def service_tier(self) -> str | None:
        """The service tier the upstream said served the stream, as it said it."""
        ...

    def feed(self, piece: Piece) -> bool:
        """Add a piece; whether the caller is to receive it."""
        ...

    def answer(self) -> Assembled:
        """What the stream added up to."""
        ...


class _ChatLog:
    def __init__(self, include_usage: bool) -> None:
        self._assembler = StreamAssembler()
        self._include_usage = include_usage
        self._whole = True

    @property
    def usage(self) -> Usage | None:
        return self._assembler.usage

    @property
    def service_tier(self) -> str | None:
        return self._assembler.service_tier

    def feed(self, piece: Piece) -> bool:
        chunk, known = decode_chunk(piece.data)
        self._whole = self._whole and known
        self._assembler.feed(chunk)
        # the usage-only chunk the worker always asks for goes only to callers who asked
        return bool(chunk.choices) or self._include_usage

    def answer(self) -> Assembled:
        completion = _encoder.encode(self._assembler.completion())
        return Assembled(completion, self._assembler.splits(), self._whole)


class _MessageLog:
    def __init__(self) -> None:
        self._assembler = MessageAssembler()

    @property
    def usage(self) -> Usage | None:
        return self._assembler.usage

    @property
    def service_tier(self) -> str | None:
        return self._assembler.service_tier

    def feed(self, piece: Piece) -> bool:
        self._assembler.feed(piece)
        return True  # every event, ping included, as the upstream sent it

    def answer(self) -> Assembled:
        message = self._assembler.message()
        if message is None:
            return Assembled(_encoder.encode(self._assembler.partial()), [], whole=False)
        return Assembled(_encoder.encode(message), self._assembler.splits(), whole=True)


class _ResponseLog:
    """A Responses stream: its last event (``response.completed`` ...) carries the whole
    response, which is the answer."""

    def __init__(self) -> None:
        self._response: dict[str, Any] | None = None
        self._usage: Usage | None = None
        self._tier: str | None = None

    @property
    def usage(self) -> Usage | None:
        return self._usage

    @property
    def service_tier(self) -> str | None:
        return self._tier

    def feed(self, piece: Piece) -> bool:
        if piece.event in FINAL_EVENTS:
            try:
                response = _object_decoder.decode(piece.data).get("response")
            except msgspec.MsgspecError:
                return True
            if isinstance(response, dict):
                self._response = response
                usage = response_usage(response)
                if usage is not None:
                    self._usage = usage_from_responses(usage)
                tier = response.get("service_tier")
                self._tier = tier if isinstance(tier, str) else None
        return True  # every event, as the worker sent it

    def answer(self) -> Assembled:
        response = self._response
        whole = response is not None and response.get("status") in ("completed", "incomplete")
        return Assembled(_encoder.encode(response or {}), [], whole=whole)


def stream_log(prepared: Prepared) -> StreamLog:
    """The log for a stream of ``prepared``'s API."""
    if prepared.api is Api.CHAT:
        return _ChatLog(prepared.include_usage)
    if prepared.api is Api.RESPONSES:
        return _ResponseLog()
    return _MessageLog()


def replay(prepared: Prepared, hit: CachedReply) -> tuple[list[Piece], StreamEnd]:
    """A stored answer as the pieces of a stream of ``prepared``'s API, and its end record.

    Raises:
        msgspec.MsgspecError: the entry is not an answer of that API.
    """
    if prepared.api is Api.RESPONSES:
        events = replay_events(_object_decoder.decode(hit.body))
        return [Piece(_encoder.encode(data), name) for name, data in events], StreamEnd()
    if prepared.api is not Api.CHAT:
        return replay_messages(hit.body, hit.splits), StreamEnd()
    completion = _completion_decoder.decode(hit.body)
    chunks = replay_chunks(completion, include_usage=prepared.include_usage, splits=hit.splits)
    finish = completion.choices[0].finish_reason if completion.choices else None
    end = StreamEnd(usage=completion.usage, finish_reason=finish)
    return [Piece(_encoder.encode(chunk)) for chunk in chunks], end
