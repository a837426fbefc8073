"""A stream whose worker message went missing is never passed on as whole nor cached: the
broker checks ``Llm-Seq`` on what its worker sends, and the caller gets an error.

A stand-in worker (a real NATS subscriber in the workers' queue group) answers the broker
with chunks 0 and 2 (1 lost), then an end.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from nats.aio.msg import Msg

from edge_client import EdgeClient, InternalServerError
from schemas import headers, subjects
from tests.support.stack import Stack, StackFactory, config_from


def chunk(seq: int, text: str) -> tuple[bytes, dict[str, str]]:
    body = {
        "id": "chatcmpl-gap",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "gap-model",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return msgspec.json.encode(body), {headers.STREAM: "chunk", headers.SEQ: str(seq)}


async def test_a_gap_from_the_worker_fails_the_stream_and_is_not_cached(
    nats_url: str, make_stack: StackFactory
) -> None:
    """The caller's stream ends with a 502 ``stream_gap``; the same request asked again
    reaches the worker again (nothing was cached) and the broken call was cancelled."""
    config = config_from("""
        [cache]
        l2 = "off"
        [providers.standin]
        kind = "openai_compatible"
        base_url = "http://127.0.0.1:9/v1"
        [models.gapped]
        deployments = [{ provider = "standin", model = "gap-model" }]
    """)
    stack: Stack = await make_stack(nats_url, config, providers=[])
    calls: list[Msg] = []
    cancels: list[bytes] = []

    async def worker(msg: Msg) -> None:
        calls.append(msg)
        end = msgspec.json.encode({"finish_reason": "stop"})
        for body, hdrs in (chunk(0, "zero "), chunk(2, "two")):
            await stack.nc.publish(msg.reply, body, headers={headers.STATUS: "200", **hdrs})
        end_headers = {headers.STATUS: "200", headers.STREAM: "end", headers.SEQ: "3"}
        await stack.nc.publish(msg.reply, end, headers=end_headers)

    async def on_cancel(msg: Msg) -> None:
        cancels.append(msg.data)

    await stack.nc.subscribe(
        subjects.provider_subject("standin"), queue=subjects.WORKER_QUEUE, cb=worker
    )
    await stack.nc.subscribe(subjects.CANCEL, cb=on_cancel)
    await stack.nc.flush()
    request = {"model": "gapped", "messages": [{"role": "user", "content": "count"}]}
    async with EdgeClient(stack.nc) as client:
        for _ in range(2):
            with pytest.raises(InternalServerError) as failed:
                async with client.stream(request) as stream:
                    _ = [c async for c in stream]
            assert failed.value.status == 502
            assert failed.value.code == "stream_gap"
    assert len(calls) == 2  # the second ask was not answered from a cache
    async with asyncio.timeout(5):
        while len(cancels) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
