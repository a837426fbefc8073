"""A streamed answer in its caller's API: what the pipeline keeps of it as it relays it, and
how a stored answer is streamed again.

A stream's pieces reach the caller as the worker sent them; the broker decodes each one only
to add the answer up (what the cache stores and the meter prices): chat chunks with
:class:`~broker.replies.assemble.StreamAssembler`, Anthropic events with
:class:`~broker.replies.message_stream.MessageAssembler`. An answer that cannot be rebuilt
from its pieces (a delta holding a field the broker does not know) is priced but not stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import msgspec

from broker.cache.response import CachedReply
from broker.replies.assemble import StreamAssembler, replay_chunks
from broker.replies.message_stream import MessageAssembler, replay_events
from broker.request import Piece, Prepared
from schemas import ChatCompletion, StreamEnd, Usage
from schemas.api import Api
from schemas.codec import decode_chunk

__all__ = ["Assembled", "StreamLog", "replay", "stream_log"]

_encoder = msgspec.json.Encoder()
_completion_decoder = msgspec.json.Decoder(ChatCompletion)


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


def stream_log(prepared: Prepared) -> StreamLog:
    """The log for a stream of ``prepared``'s API."""
    if prepared.api is Api.CHAT:
        return _ChatLog(prepared.include_usage)
    return _MessageLog()


def replay(prepared: Prepared, hit: CachedReply) -> tuple[list[Piece], StreamEnd]:
    """A stored answer as the pieces of a stream of ``prepared``'s API, and its end record.

    Raises:
        msgspec.MsgspecError: the entry is not an answer of that API.
    """
    if prepared.api is not Api.CHAT:
        return replay_events(hit.body, hit.splits), StreamEnd()
    completion = _completion_decoder.decode(hit.body)
    chunks = replay_chunks(completion, include_usage=prepared.include_usage, splits=hit.splits)
    finish = completion.choices[0].finish_reason if completion.choices else None
    end = StreamEnd(usage=completion.usage, finish_reason=finish)
    return [Piece(_encoder.encode(chunk)) for chunk in chunks], end
