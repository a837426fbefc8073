"""In-process service stacks (broker, workers, bridge) on a real NATS server."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import httpx
import msgspec
from nats.aio.client import Client

from broker.config import Config
from broker.service import BrokerOptions, BrokerService
from edge_bridge import BridgeOptions, BridgeServer
from edge_runtime.process import close_quietly, connect
from workers import WorkerService, build_provider, http_client
from workers.h1 import UpstreamClient

__all__ = [
    "MOCK_ONLY",
    "Stack",
    "StackFactory",
    "chat",
    "config_from",
    "one_upstream_config",
    "start_stack",
]


#: One mock model, no L2, no batch engine: the smallest stack that answers llm.chat.
MOCK_ONLY = """
    [cache]
    l2 = "off"
    [batch]
    enabled = false
    [providers.mock]
    kind = "mock"
    [models.mock]
    deployments = [{ provider = "mock" }]
"""


def config_from(toml: str) -> Config:
    """A config from an indented TOML snippet."""
    return Config.from_toml(textwrap.dedent(toml))


def one_upstream_config(
    base_url: str, deployment: str = "", sections: str = "", *, model: str = "m"
) -> Config:
    """Cache and batches off; an OpenAI-compatible upstream at ``base_url`` (provider
    ``up``) serving ``model`` through one deployment. ``deployment``: more keys of its inline
    table (``concurrency = 1``); ``sections``: more TOML (``[admission]`` ...)."""
    keys = ", ".join(k for k in ('provider = "up"', f'model = "{model}"', deployment) if k)
    return config_from(
        f"""
        [cache]
        enabled = false
        [batch]
        enabled = false
        [providers.up]
        kind = "openai_compatible"
        base_url = "{base_url}"
        [models.{model}]
        deployments = [{{ {keys} }}]
        """
        + sections
    )


def chat(content: str, model: str = "mock", **extra: object) -> bytes:
    """An ``llm.chat`` request body: one user message (``extra``: more request fields)."""
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return msgspec.json.encode(body)


@dataclass
class Stack:
    """Running services and a client connection for the test."""

    nc: Client
    brokers: list[BrokerService] = field(default_factory=list)
    workers: list[tuple[WorkerService, Client]] = field(default_factory=list)
    bridge: BridgeServer | None = None
    http: httpx.AsyncClient | None = None
    upstream_sessions: list[UpstreamClient] = field(default_factory=list)
    stopped: bool = field(default=False, init=False, repr=False)

    @property
    def base_url(self) -> str:
        assert self.bridge is not None
        return f"http://127.0.0.1:{self.bridge.port}/v1"

    async def stop(self) -> None:
        """Stop what was started, client side first: the HTTP client; the bridge and the
        brokers together (each finishes what it has in flight); the workers; the connections.
        Every step runs even when another failed (the failures are raised after); a second
        call does nothing."""
        if self.stopped:
            return
        self.stopped = True
        stages: list[list[Callable[[], Awaitable[object]]]] = [
            [self.http.aclose] if self.http is not None else [],
            [
                *([self.bridge.stop] if self.bridge is not None else []),
                *(partial(broker.stop, 1.0) for broker in self.brokers),
            ],
            [partial(worker.stop, 1.0) for worker, _ in self.workers],
            [
                *(partial(close_quietly, nc) for _, nc in self.workers),
                *(session.close for session in self.upstream_sessions),
                partial(close_quietly, self.nc),
            ],
        ]
        failures: list[Exception] = []
        for stage in stages:
            outcomes = await asyncio.gather(*(step() for step in stage), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    failures.append(outcome)
                elif isinstance(outcome, BaseException):
                    raise outcome
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise ExceptionGroup("stopping the stack failed", failures)


async def start_stack(
    nats_url: str,
    config: Config,
    *,
    providers: list[str] | None = None,
    redis_url: str | None = None,
    bridge: bool = False,
    brokers: int = 1,
    environ: dict[str, str] | None = None,
) -> Stack:
    """Start brokers, a worker per provider (each with its own upstream session, as a worker
    process has), and optionally the bridge. When a part fails to start, the parts started so
    far (and the failed one) are stopped before the error is raised."""
    stack = Stack(nc=await connect(nats_url, "test-client"))
    try:
        for _ in range(brokers):
            service = BrokerService(config, BrokerOptions(nats_url=nats_url, redis_url=redis_url))
            stack.brokers.append(service)
            await service.start()
        for name in providers if providers is not None else config.serving_providers():
            settings = config.providers[name]
            session = http_client()
            stack.upstream_sessions.append(session)
            provider = build_provider(settings, environ or {}, session)
            nc = await connect(nats_url, f"test-worker-{name}")
            worker = WorkerService(nc, provider, max_concurrency=settings.max_concurrency)
            stack.workers.append((worker, nc))
            await worker.start()
            await nc.flush()
        if bridge:
            stack.bridge = BridgeServer(BridgeOptions(nats_url=nats_url, port=0))
            await stack.bridge.start()
            stack.http = httpx.AsyncClient(base_url=stack.base_url, timeout=30)
    except BaseException as failure:
        try:
            await stack.stop()
        except Exception as cleanup:
            failure.add_note(f"stopping the half-started stack failed too: {cleanup!r}")
        raise
    return stack


class StackFactory:
    """Starts stacks as :func:`start_stack` does (same arguments) and remembers them, so that
    :meth:`stop_all` stops every one a test did not stop itself (the ``make_stack`` fixture)."""

    def __init__(self) -> None:
        self.started: list[Stack] = []

    async def __call__(
        self,
        nats_url: str,
        config: Config,
        *,
        providers: list[str] | None = None,
        redis_url: str | None = None,
        bridge: bool = False,
        brokers: int = 1,
        environ: dict[str, str] | None = None,
    ) -> Stack:
        stack = await start_stack(
            nats_url,
            config,
            providers=providers,
            redis_url=redis_url,
            bridge=bridge,
            brokers=brokers,
            environ=environ,
        )
        self.started.append(stack)
        return stack

    async def stop_all(self) -> None:
        """Stop the stacks, the last started first; each is stopped even if another failed."""
        failures: list[Exception] = []
        for stack in reversed(self.started):
            try:
                await stack.stop()
            except Exception as exc:
                failures.append(exc)
        self.started.clear()
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise ExceptionGroup("stopping the stacks failed", failures)
