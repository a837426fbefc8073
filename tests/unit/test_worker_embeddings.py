"""A worker's embeddings calls: taken on the provider's embeddings subject (whatever the call's
headers say), answered whole in OpenAI's shapes, and refused on the chat subject."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import msgspec
import pytest

from schemas import ChatCompletionChunk, headers, subjects
from schemas.api import Api
from workers.base import ProviderRequest
from workers.calls import ApiCalls, failure
from workers.errors import ErrorKind, ProviderError
from workers.mock import MockProvider
from workers.runner import WorkerService

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from workers.base import Provider


@dataclass
class Published:
    subject: str
    data: bytes
    headers: dict[str, str]


@dataclass
class RecordingNats:
    """What a worker uses of a NATS client to answer a call: ``publish`` and the server's
    ``max_payload``."""

    max_payload: int = 8 * 1024 * 1024
    published: list[Published] = field(default_factory=list)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        self.published.append(Published(subject, payload, headers))


@dataclass
class Call:
    """A call as the worker's subscription hands it over (the fields it reads of a Msg)."""

    data: bytes
    headers: dict[str, str]
    reply: str = "_INBOX.test.1"


class ChatOnly:
    """A provider without an embeddings side."""

    name = "chat-only"

    async def complete(self, request: ProviderRequest) -> bytes:
        raise AssertionError("not called")

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        raise AssertionError("not called")
        yield  # pragma: no cover

    async def aclose(self) -> None:
        """Nothing to release."""


def embeddings_body(**fields: Any) -> bytes:
    return msgspec.json.encode({"model": "vectors", "input": ["alpha", "beta"], **fields})


async def answer(service: WorkerService, nc: RecordingNats, call: Call, api: Api | None) -> Any:
    """The one message the worker published for ``call`` (``api``: the subject's API)."""
    await service._handle(cast("Msg", call), api)
    assert len(nc.published) == 1
    published = nc.published[0]
    assert published.subject == call.reply
    return int(published.headers[headers.STATUS]), msgspec.json.decode(published.data)


def test_only_adapters_that_embed_take_the_embeddings_subject() -> None:
    """The mock computes embeddings, so its worker serves ``llm.provider.mock.embeddings``;
    an adapter without ``embed`` serves its chat subject only."""
    nc = cast("Client", RecordingNats())
    assert WorkerService(nc, MockProvider("mock")).embeddings_subject == (
        subjects.provider_embeddings_subject("mock")
    )
    assert WorkerService(nc, cast("Provider", ChatOnly())).embeddings_subject is None


async def test_an_embeddings_call_is_answered_whole_with_one_vector_per_input() -> None:
    """On the embeddings subject, a call (``Llm-Api: embeddings`` as the broker sends it, and
    a ``stream`` field the request should not have) gets one whole reply: the embeddings list,
    one vector of the asked dimensions per input, in input order."""
    nc = RecordingNats()
    service = WorkerService(cast("Client", nc), MockProvider("mock", embedding_dimensions=8))
    call = Call(
        embeddings_body(stream=True, dimensions=4),
        {headers.API: Api.EMBEDDINGS.value, headers.UPSTREAM_MODEL: "vectors-v1"},
    )
    status, body = await answer(service, nc, call, Api.EMBEDDINGS)
    assert status == 200
    assert headers.STREAM not in nc.published[0].headers
    assert (body["object"], body["model"]) == ("list", "vectors-v1")
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert [len(item["embedding"]) for item in body["data"]] == [4, 4]


async def test_a_broken_embeddings_request_is_an_openai_400() -> None:
    """A body that is not an embeddings request fails as OpenAI's envelope (not Anthropic's)."""
    nc = RecordingNats()
    service = WorkerService(cast("Client", nc), MockProvider("mock"))
    status, body = await answer(
        service, nc, Call(msgspec.json.encode({"model": "vectors"}), {}), Api.EMBEDDINGS
    )
    assert status == 400
    assert body["error"]["code"] == "invalid_request"


async def test_an_embeddings_call_on_the_chat_subject_is_refused() -> None:
    """``Llm-Api: embeddings`` on the provider's chat subject is a 400 naming the subject such
    calls go to; the adapter is never called."""
    nc = RecordingNats()
    service = WorkerService(cast("Client", nc), MockProvider("mock"))
    call = Call(embeddings_body(), {headers.API: Api.EMBEDDINGS.value})
    status, body = await answer(service, nc, call, None)
    assert status == 400
    assert "llm.provider.<provider>.embeddings" in body["error"]["message"]


async def test_a_provider_without_embeddings_refuses_them() -> None:
    """Asked for embeddings anyway, an adapter without ``embed`` fails with a provider error
    (its worker never subscribes to the subject, so a broker cannot reach it)."""
    calls = ApiCalls(cast("Provider", ChatOnly()))
    request = ProviderRequest(embeddings_body(), api=Api.EMBEDDINGS)
    with pytest.raises(ProviderError) as refused:
        await calls.whole(request)
    assert refused.value.kind is ErrorKind.BAD_REQUEST


def test_embeddings_failures_are_openai_envelopes() -> None:
    """A failed embeddings call's envelope is OpenAI's, as a chat call's is."""
    status, body, _ = failure(TimeoutError(), "up", 1.0, Api.EMBEDDINGS)
    assert status == 504
    assert msgspec.json.decode(body)["error"]["code"] == "deadline_exceeded"
