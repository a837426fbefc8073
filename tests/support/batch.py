"""Batch helpers shared by the batch tests: a stack with an empty line queue, input lines,
and waits that follow a batch's events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.js.errors import NotFoundError as JsNotFound

from broker.config import Config
from edge_runtime.batch_store import BatchStore
from schemas.batch import BatchRecord
from tests.support.fake_gemini_batches import GEMINI_KEY
from tests.support.stack import Stack, StackFactory

__all__ = [
    "FINAL",
    "OFFLOAD_ENV",
    "batch_stack",
    "jsonl",
    "lines",
    "offload_config",
    "offload_objects",
    "purge_batch_queue",
    "record_until",
    "wait_final",
    "wait_for",
    "wait_status",
]

FINAL = {"completed", "failed", "expired", "cancelled"}
#: the keys :func:`offload_config`'s providers read
OFFLOAD_ENV = {"OPENAI_KEY": "sk-test", "ANTHROPIC_KEY": "sk-ant-test", "GEMINI_KEY": GEMINI_KEY}


async def batch_stack(
    make_stack: StackFactory,
    nats_url: str,
    config: Config,
    providers: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> Stack:
    """A stack with the bridge and an empty batch line queue (workers for ``providers``, by
    default every provider a model routes to, their keys read from ``environ``);
    ``make_stack`` stops it."""
    running = await make_stack(nats_url, config, providers=providers, bridge=True, environ=environ)
    await purge_batch_queue(running.nc)
    return running


async def purge_batch_queue(nc: Client) -> None:
    """Lines left queued by another test's batches are not this test's business."""
    store = await BatchStore.open(nc)
    del store
    await nc.jetstream().purge_stream("LLM_EDGE_BATCH_LINES")


def lines(
    n: int, model: str = "mock", prefix: str = "req", max_tokens: int | None = None
) -> list[dict[str, Any]]:
    limit = {} if max_tokens is None else {"max_tokens": max_tokens}
    return [
        {
            "custom_id": f"{prefix}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": f"line {i}"}],
                **limit,
            },
        }
        for i in range(n)
    ]


def offload_config(
    base_url: str,
    *,
    poll_s: float = 0.02,
    offload: str = "auto",
    offload_poll_s: float = 0.02,
    limits: tuple[int, int, int] | None = None,
    gemini_inline_bytes: int | None = None,
    prices: bool = False,
) -> str:
    """The native batch offload stack's config: OpenAI, Anthropic and Gemini providers at the
    fake Batch APIs' ``base_url`` (models ``gpt``, ``claude``, ``gem``), keys in
    :data:`OFFLOAD_ENV`. ``limits``: the sub-batch line limits (default, anthropic, gemini);
    ``prices``: the deployments' 2 and 8 USD per 1M tokens."""
    limit_table = ""
    if limits is not None:
        default, anthropic, gemini = limits
        limit_table = f"""
[batch.offload_limits]
default = [{default}, 10000000]
anthropic = [{anthropic}, 10000000]
gemini = [{gemini}, 10000000]
"""
    inline = "" if gemini_inline_bytes is None else f"batch_inline_bytes = {gemini_inline_bytes}\n"

    def models(name: str, provider: str, model: str) -> str:
        if not prices:
            return f"""[models.{name}]
deployments = [{{ provider = "{provider}", model = "{model}" }}]
"""
        return f"""[models.{name}]
deployments = [
  {{ provider = "{provider}", model = "{model}", input_price = 2.0, output_price = 8.0 }},
]
"""

    return f"""
[cache]
enabled = false

[batch]
poll_s = {poll_s}
offload = "{offload}"
offload_poll_s = {offload_poll_s}
{limit_table}
[providers.openai]
kind = "openai"
base_url = "{base_url}"
api_key_env = "OPENAI_KEY"

[providers.anthropic]
kind = "anthropic"
base_url = "{base_url}"
api_key_env = "ANTHROPIC_KEY"

[providers.gemini]
kind = "gemini"
base_url = "{base_url.removesuffix("/v1")}/v1beta"
api_key_env = "GEMINI_KEY"
{inline}
{models("gpt", "openai", "gpt-4o-mini")}
{models("claude", "anthropic", "claude-x")}
{models("gem", "gemini", "gemini-x")}"""


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


async def wait_status(
    nc: Client,
    batch_id: str,
    wanted: set[str],
    patience_s: float = 60,
    hdrs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Follow llm.batch.events.<tenant>.<id> until the batch reaches one of ``wanted`` (subscribe
    first, then read the current state, so no event is missed)."""
    sub = await nc.subscribe(f"llm.batch.events.*.{batch_id}")
    try:
        body = msgspec.json.encode({"id": batch_id})
        current = msgspec.json.decode(
            (await nc.request("llm.batch.get", body, timeout=5, headers=hdrs)).data
        )
        while current["status"] not in wanted:
            current = msgspec.json.decode((await sub.next_msg(timeout=patience_s)).data)
        return current  # type: ignore[no-any-return]
    finally:
        await sub.unsubscribe()


async def wait_for(
    nc: Client, batch_id: str, condition: Callable[[dict[str, Any]], bool], patience_s: float = 30
) -> dict[str, Any]:
    """Follow llm.batch.events.<tenant>.<id> until the batch object satisfies ``condition``."""
    sub = await nc.subscribe(f"llm.batch.events.*.{batch_id}")
    try:
        body = msgspec.json.encode({"id": batch_id})
        current = msgspec.json.decode((await nc.request("llm.batch.get", body, timeout=5)).data)
        while not condition(current):
            current = msgspec.json.decode((await sub.next_msg(timeout=patience_s)).data)
        return current  # type: ignore[no-any-return]
    finally:
        await sub.unsubscribe()


async def wait_final(nc: Client, batch_id: str) -> dict[str, Any]:
    """Wait for a final status."""
    return await wait_status(nc, batch_id, FINAL)


async def offload_objects(nc: Client, batch_id: str) -> list[str]:
    """The files bucket's entries (deleted ones too) a batch's sub-batches wrote."""
    store = await BatchStore.open(nc)
    try:
        infos = await store.files.list()
    except JsNotFound:  # an empty bucket
        return []
    return sorted(i.name for i in infos if i.name.startswith(f"offload-{batch_id}-"))


async def record_until(
    nc: Client, batch_id: str, condition: Callable[[BatchRecord], bool]
) -> BatchRecord:
    """Follow the batch's record until it satisfies ``condition``."""
    watcher = await (await nc.jetstream().key_value("llm_edge_batches")).watch(f"batch.{batch_id}")
    try:
        async with asyncio.timeout(30):
            async for entry in watcher:
                if entry is None or not entry.value:
                    continue
                record = msgspec.json.decode(entry.value, type=BatchRecord)
                if condition(record):
                    return record
    finally:
        await watcher.stop()
    raise AssertionError("unreachable")
