"""Stored and background responses through the real path with the official ``openai`` SDK:
retrieve, delete, list input items, continue a conversation (``previous_response_id``), run
in the background and poll, cancel; a tenant sees only its own responses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.responses import Response

from broker.config import Config
from broker.responses.pipeline_run import PipelineRun
from broker.tenancy.tenants import hash_key
from edge_runtime.embedded import EmbeddedNats
from schemas import subjects
from schemas.jetstream import RESPONSE_EVENTS_STREAM
from tests.support import responses as responses_stack
from tests.support.responses import responses_config
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted, openai_completion

#: the recording fake of OpenAI itself (a fixture shared with the other Responses API tests)
openai_upstream = responses_stack.openai_upstream

KEY_ACME, KEY_GLOBEX = "sk-acme-responses", "sk-globex-responses"
#: The longest a background response may take to finish here.
FINISH_S = 15.0


@pytest.fixture
async def stack(
    nats_url: str, fake_openai: FakeOpenAI, openai_upstream: FakeOpenAI, make_stack: StackFactory
) -> Stack:
    config = responses_config(
        fake_openai.base_url,
        openai_upstream.base_url,
        f"""
        [cache]
        enabled = false
        [batch]
        enabled = false
        [responses]
        poll_s = 0.05
        [tenants.acme]
        keys = ["{hash_key(KEY_ACME)}"]
        [tenants.globex]
        keys = ["{hash_key(KEY_GLOBEX)}"]
        """,
    )
    return await make_stack(nats_url, config, bridge=True)


def _client(stack: Stack, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.base_url, api_key=key, max_retries=0)


@pytest.fixture
def acme(stack: Stack) -> openai.AsyncOpenAI:
    return _client(stack, KEY_ACME)


@pytest.fixture
def globex(stack: Stack) -> openai.AsyncOpenAI:
    return _client(stack, KEY_GLOBEX)


async def _until(client: openai.AsyncOpenAI, response_id: str, *statuses: str) -> Response:
    """Poll the response (as a client of the API does) until it has one of ``statuses``."""

    async def poll() -> Response:
        while True:
            response = await client.responses.retrieve(response_id)
            if response.status in statuses:
                return response
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), FINISH_S)


def compat_only(base_url: str, responses: str = "") -> Config:
    """Tenant acme's stack on the compat provider alone (no cache, no batches), with
    ``responses`` as the ``[responses]`` table's one setting."""
    table = f"[responses]\n        {responses}" if responses else ""
    return config_from(f"""
        [cache]
        enabled = false
        [batch]
        enabled = false
        {table}
        [tenants.acme]
        keys = ["{hash_key(KEY_ACME)}"]
        [providers.compat]
        kind = "openai_compatible"
        base_url = "{base_url}"
        [models.compat]
        deployments = [{{ provider = "compat", model = "served-compat" }}]
    """)


async def test_stored_response_read_listed_and_deleted(acme: openai.AsyncOpenAI) -> None:
    """A stored response reads back as created, lists its input items, and is gone once
    deleted."""
    created = await acme.responses.create(
        model="mock",
        input=[
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three"},
        ],
    )
    again = await acme.responses.retrieve(created.id)
    assert again.model_dump() == created.model_dump()
    page = await acme.responses.input_items.list(created.id, order="asc", limit=2)
    texts = [item.content[0].text for item in page.data]  # type: ignore[union-attr]
    assert texts == ["one", "two"]
    assert page.has_more is True
    rest = await acme.responses.input_items.list(created.id, order="asc", after=page.last_id)
    assert [item.content[0].text for item in rest.data] == ["three"]  # type: ignore[union-attr]
    assert rest.has_more is False
    newest = await acme.responses.input_items.list(created.id)  # desc by default
    assert newest.first_id == rest.last_id
    await acme.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await acme.responses.retrieve(created.id)


async def test_a_tenant_sees_only_its_own(
    acme: openai.AsyncOpenAI, globex: openai.AsyncOpenAI
) -> None:
    """Another tenant's response is a 404 to read, list, delete or continue."""
    created = await acme.responses.create(model="mock", input="secret")
    with pytest.raises(openai.NotFoundError):
        await globex.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await globex.responses.input_items.list(created.id)
    with pytest.raises(openai.NotFoundError):
        await globex.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await globex.responses.create(model="mock", input="hi", previous_response_id=created.id)
    assert (await acme.responses.retrieve(created.id)).id == created.id


async def test_store_false_keeps_nothing(acme: openai.AsyncOpenAI) -> None:
    """``store: false`` answers without keeping the response."""
    created = await acme.responses.create(model="mock", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        await acme.responses.retrieve(created.id)


async def test_conversation_continues_on_a_chat_upstream(
    acme: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    """``previous_response_id`` puts the earlier turns (input and output) before the input."""
    first = await acme.responses.create(model="compat", input="My name is Ada.")
    second = await acme.responses.create(
        model="compat", input="What is my name?", previous_response_id=first.id
    )
    third = await acme.responses.create(
        model="compat", input="Spell it.", previous_response_id=second.id
    )
    assert third.previous_response_id == second.id
    assert fake_openai.received[-1].body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "My name is Ada."}]},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]},
        {"role": "assistant", "content": second.output_text},
        {"role": "user", "content": "Spell it."},
    ]


async def test_conversation_passes_through_to_openai(
    acme: openai.AsyncOpenAI, openai_upstream: FakeOpenAI
) -> None:
    """To OpenAI the conversation goes as OpenAI keeps it: its own previous_response_id."""
    first = await acme.responses.create(model="gpt", input="My name is Ada.")
    await acme.responses.create(model="gpt", input="Name?", previous_response_id=first.id)
    assert openai_upstream.received[-1].body == {
        "model": "gpt-4.1",
        "input": "Name?",
        "previous_response_id": "resp_upstream_1",
    }


async def test_conversation_moves_from_a_chat_upstream_to_openai(
    acme: openai.AsyncOpenAI, openai_upstream: FakeOpenAI
) -> None:
    """A conversation begun on a translated deployment and continued on OpenAI sends OpenAI
    its earlier turns as input (OpenAI does not know our id); continued on OpenAI again, it
    names OpenAI's own id of the response OpenAI served."""
    first = await acme.responses.create(model="compat", input="My name is Ada.")
    second = await acme.responses.create(model="gpt", input="Name?", previous_response_id=first.id)
    sent = openai_upstream.received[-1].body
    assert "previous_response_id" not in sent
    assert sent["input"] == [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "My name is Ada."}],
        },
        {
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": first.output_text, "annotations": []}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Name?"}]},
    ]
    await acme.responses.create(model="gpt", input="Again?", previous_response_id=second.id)
    assert openai_upstream.received[-1].body == {
        "model": "gpt-4.1",
        "input": "Again?",
        "previous_response_id": "resp_upstream_1",
    }


async def test_background_response_queued_then_completed(
    acme: openai.AsyncOpenAI, openai_upstream: FakeOpenAI
) -> None:
    """A background response is accepted at once as queued, runs at OpenAI as a background
    response of its own (created once, then read there until it is final) and completes
    under our id."""
    created = await acme.responses.create(model="gpt", input="take your time", background=True)
    assert created.status == "queued"
    assert created.background is True
    done = await _until(acme, created.id, "completed", "failed")
    assert done.status == "completed"
    assert done.id == created.id
    assert done.output_text == "upstream says hi to gpt-4.1"
    creates = [r for r in openai_upstream.received if r.method == "POST"]
    assert [r.body for r in creates] == [
        {"model": "gpt-4.1", "input": "take your time", "background": True}
    ]
    reads = [r.path for r in openai_upstream.received if r.method == "GET"]
    assert reads
    assert set(reads) == {"/v1/responses/resp_bg_1"}


async def test_background_response_cancelled_at_openai(
    acme: openai.AsyncOpenAI, openai_upstream: FakeOpenAI
) -> None:
    """Cancelling a background response that runs at OpenAI cancels it there, and it stays
    cancelled."""
    openai_upstream.background.hold = asyncio.Event()
    created = await acme.responses.create(model="gpt", input="hold on", background=True)
    await asyncio.wait_for(openai_upstream.background.read.wait(), FINISH_S)  # running there
    cancelled = await acme.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert openai_upstream.background.runs["resp_bg_1"].cancels == 1
    assert openai_upstream.background.runs["resp_bg_1"].status == "cancelled"
    openai_upstream.background.hold.set()
    assert (await acme.responses.retrieve(created.id)).status == "cancelled"
    assert len([r for r in openai_upstream.received if r.path == "/v1/responses"]) == 1


async def test_background_response_cancelled_mid_call(
    acme: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    """Cancelling a running background response stops its upstream call, and it stays
    cancelled."""
    release = asyncio.Event()
    fake_openai.script.append(Scripted(delay_s=30, release=release))
    created = await acme.responses.create(model="compat", input="hold on", background=True)
    await asyncio.wait_for(_received(fake_openai, 1), FINISH_S)
    cancelled = await acme.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    await asyncio.wait_for(fake_openai.disconnected.wait(), FINISH_S)  # the call was stopped
    assert (await acme.responses.retrieve(created.id)).status == "cancelled"
    assert len(fake_openai.received) == 1


async def test_only_background_responses_cancel(acme: openai.AsyncOpenAI) -> None:
    """Cancelling a foreground response is a 400."""
    created = await acme.responses.create(model="mock", input="done already")
    with pytest.raises(openai.BadRequestError):
        await acme.responses.cancel(created.id)


async def _received(fake: FakeOpenAI, calls: int) -> None:
    while len(fake.received) < calls:  # noqa: ASYNC110  (the fake has no arrival event)
        await asyncio.sleep(0.01)


async def test_background_stream_followed_again_from_a_sequence_number(
    acme: openai.AsyncOpenAI, openai_upstream: FakeOpenAI
) -> None:
    """``background`` with ``stream``: the POST streams the events live under our id; a
    ``retrieve(stream=True, starting_after=N)`` while it runs replays the events after N and
    follows it live to its last event; the stored response is the completed one."""
    release = asyncio.Event()
    openai_upstream.script.append(Scripted(release=release, hold_after=4))
    created = await acme.responses.create(
        model="gpt", input="stream it", background=True, stream=True
    )
    live = created.__aiter__()
    first = [await asyncio.wait_for(anext(live), FINISH_S) for _ in range(4)]
    assert [e.sequence_number for e in first] == [0, 1, 2, 3]
    assert first[0].type == "response.created"
    response_id = first[0].response.id  # type: ignore[union-attr]
    assert first[0].response.status == "queued"  # type: ignore[union-attr]
    resumed = await acme.responses.retrieve(response_id, stream=True, starting_after=1)
    again = resumed.__aiter__()
    replayed = [await asyncio.wait_for(anext(again), FINISH_S) for _ in range(2)]
    assert [e.model_dump() for e in replayed] == [e.model_dump() for e in first[2:]]
    release.set()  # the upstream goes on: both callers follow it live
    rest = await asyncio.wait_for(_all(live), FINISH_S)
    followed = await asyncio.wait_for(_all(again), FINISH_S)
    events = [*first, *rest]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.model_dump() for e in followed] == [e.model_dump() for e in events[4:]]
    last = events[-1]
    assert last.type == "response.completed"
    assert last.response.id == response_id  # type: ignore[union-attr]
    done = await _until(acme, response_id, "completed", "failed")
    assert done.output_text == last.response.output_text  # type: ignore[union-attr]
    assert done.output_text.startswith("upstream")
    assert done.background is True
    assert len([r for r in openai_upstream.received if r.path == "/v1/responses"]) == 1
    tail = await acme.responses.retrieve(response_id, stream=True, starting_after=len(events) - 2)
    assert [e.type async for e in tail] == ["response.completed"]


async def _kept_events(stack: Stack, response_id: str) -> int:
    """How many events the events stream holds for ``response_id``."""
    info = await stack.nc.jetstream().stream_info(
        RESPONSE_EVENTS_STREAM, subjects_filter=subjects.response_events(response_id)
    )
    return sum((info.state.subjects or {}).values())


async def test_deleting_a_streamed_background_response_drops_its_events(
    stack: Stack, acme: openai.AsyncOpenAI
) -> None:
    """A streamed background response's events are kept while it is stored; deleting it
    drops them from the events stream (they stayed until ``ttl_s``)."""
    stream = await acme.responses.create(
        model="compat", input="stream then delete", background=True, stream=True
    )
    events = await asyncio.wait_for(_all(stream), FINISH_S)
    assert events[-1].type == "response.completed"
    response_id = events[0].response.id  # type: ignore[union-attr]
    await _until(acme, response_id, "completed")
    assert await _kept_events(stack, response_id) == len(events)
    await acme.responses.delete(response_id)
    assert await _kept_events(stack, response_id) == 0


async def test_only_streamed_background_responses_stream_again(
    acme: openai.AsyncOpenAI,
) -> None:
    """Following a response that was not a streamed background one is a 400."""
    created = await acme.responses.create(model="mock", input="whole")
    with pytest.raises(openai.BadRequestError):
        await acme.responses.retrieve(created.id, stream=True)


async def _all(events: AsyncIterator[Any]) -> list[Any]:
    return [event async for event in events]


async def test_another_tenant_cannot_stop_a_running_response(
    acme: openai.AsyncOpenAI, globex: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    """Another tenant deleting or cancelling a running background response gets a 404, and
    the run goes on to complete."""
    release = asyncio.Event()
    fake_openai.script.append(Scripted(delay_s=30, release=release))
    created = await acme.responses.create(model="compat", input="hold on", background=True)
    await asyncio.wait_for(_received(fake_openai, 1), FINISH_S)
    with pytest.raises(openai.NotFoundError):
        await globex.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await globex.responses.cancel(created.id)
    release.set()
    done = await _until(acme, created.id, "completed", "failed", "cancelled")
    assert done.status == "completed"


async def test_a_queued_streamed_response_cancelled_or_deleted_ends_its_stream(
    own_nats: Any, fake_openai: FakeOpenAI, make_stack: StackFactory
) -> None:
    """A streamed background response cancelled (or deleted) while it is still queued ends
    its caller's stream at once with a ``cancelled`` error event, and is never run; deleted,
    that event is the only one kept (for followers yet to get it)."""
    config = compat_only(fake_openai.base_url, "concurrency = 1")
    stack = await make_stack(own_nats.url, config, bridge=True)
    acme = _client(stack, KEY_ACME)
    release = asyncio.Event()
    fake_openai.script.append(Scripted(delay_s=30, release=release))
    await acme.responses.create(model="compat", input="hold the only slot", background=True)
    await asyncio.wait_for(_received(fake_openai, 1), FINISH_S)
    for end, kept in ((acme.responses.cancel, 2), (acme.responses.delete, 1)):
        stream = await acme.responses.create(
            model="compat", input="wait your turn", background=True, stream=True
        )
        events = stream.__aiter__()
        created = await asyncio.wait_for(anext(events), FINISH_S)
        assert created.type == "response.created"
        assert created.response.status == "queued"  # type: ignore[union-attr]
        await end(created.response.id)  # type: ignore[union-attr]
        rest = await asyncio.wait_for(_all(events), FINISH_S)
        assert [(e.type, e.code, e.sequence_number) for e in rest] == [  # type: ignore[union-attr]
            ("error", "cancelled", 1)
        ]
        assert await _kept_events(stack, created.response.id) == kept  # type: ignore[union-attr]
    release.set()
    assert len(fake_openai.received) == 1


async def test_a_background_run_that_raises_fails_after_max_deliver_runs(
    own_nats: Any, fake_openai: FakeOpenAI, make_stack: StackFactory, monkeypatch: Any
) -> None:
    """A background response whose run raises every time is run ``max_deliver`` times, then
    ends ``failed`` with a ``server_error`` that tells nothing of what raised (it was run
    again every second, left ``in_progress``); a streamed one's caller gets that error as its
    last event."""
    runs: dict[str, int] = {}

    async def raising(self: PipelineRun, response_id: str, *_: object) -> None:
        runs[response_id] = runs.get(response_id, 0) + 1
        raise RuntimeError("internal detail")

    monkeypatch.setattr(PipelineRun, "__call__", raising)
    config = compat_only(fake_openai.base_url, "max_deliver = 2")
    acme = _client(await make_stack(own_nats.url, config, bridge=True), KEY_ACME)
    created = await acme.responses.create(model="compat", input="boom", background=True)
    done = await _until(acme, created.id, "completed", "failed")
    assert done.status == "failed"
    assert done.error is not None
    assert done.error.code == "server_error"
    assert "internal detail" not in done.error.message
    stream = await acme.responses.create(
        model="compat", input="boom too", background=True, stream=True
    )
    events = await asyncio.wait_for(_all(stream), FINISH_S)
    assert [(e.type, e.sequence_number) for e in events] == [("response.created", 0), ("error", 1)]
    assert events[1].code == "server_error"  # type: ignore[union-attr]
    streamed_id = events[0].response.id  # type: ignore[union-attr]
    assert (await acme.responses.retrieve(streamed_id)).status == "failed"
    assert runs == {created.id: 2, streamed_id: 2}
    assert fake_openai.received == []


#: The small server's ``max_payload``: large entries are tried without large requests.
SMALL_PAYLOAD = 1024 * 1024


@pytest.fixture
async def small(
    tmp_path: Path, fake_openai: FakeOpenAI, make_stack: StackFactory
) -> AsyncIterator[openai.AsyncOpenAI]:
    """Acme's client of a stack on a server of its own that takes messages up to 1 MiB."""
    server = EmbeddedNats(tmp_path / "small", port=-1, max_payload=SMALL_PAYLOAD)
    server.start()
    try:
        config = compat_only(fake_openai.base_url)
        stack = await make_stack(server.url, config, bridge=True)
        yield _client(stack, KEY_ACME)
        await stack.stop()
    finally:
        server.stop()


async def test_a_background_answer_too_large_to_store_fails_it(
    small: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    """A background response whose answer, kept with its input, is over the server's
    ``max_payload`` ends ``failed`` with ``response_too_large`` (it is not run again and
    again, left ``in_progress``)."""
    answer = openai_completion("served-compat", "a" * 800_000)
    fake_openai.script.append(Scripted(body=answer))
    created = await small.responses.create(model="compat", input="b" * 300_000, background=True)
    done = await _until(small, created.id, "completed", "failed")
    assert done.status == "failed"
    assert done.error is not None
    assert done.error.code == "response_too_large"  # type: ignore[comparison-overlap]
    assert len(fake_openai.received) == 1


async def test_a_background_request_too_large_to_keep_is_a_413(small: openai.AsyncOpenAI) -> None:
    """A background request under the request limit but over ``max_payload`` once kept with
    its input items is refused with a 413, not a 503 to retry."""
    with pytest.raises(openai.APIStatusError) as caught:
        await small.responses.create(model="compat", input="b" * 600_000, background=True)
    assert caught.value.status_code == 413
