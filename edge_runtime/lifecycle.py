"""One lifecycle for every service process: start, be ready, wait for the stop, stop.

The broker, a provider worker and the bridge each run through :func:`serve`, so they start,
report readiness, settle their heap, log one ``ready`` line and stop (health first, then the
service's own drain) the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from edge_runtime.health import Health
from edge_runtime.process import Lifeline, freeze_startup_heap

__all__ = ["Probe", "Service", "serve"]


class Service(Protocol):
    """What :func:`serve` runs."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


#: What a service's readiness probe watches: its name, its connection and its subscriptions.
Probe = tuple[str, Client, Callable[[], Sequence[Subscription]]]


async def serve(
    service: Service,
    stop: asyncio.Event,
    *,
    ready: Callable[[], str],
    log: logging.Logger,
    lifeline: Lifeline | None = None,
    health: Health | None = None,
    probe: Callable[[], Probe] | None = None,
) -> None:
    """Run ``service`` until ``stop`` is set.

    Args:
        service: started here, stopped here whatever happens in between.
        stop: set by a signal (or by the lifeline, when NATS closes the connection for good).
        ready: the line logged once the service serves (called after it started).
        log: the role's logger.
        lifeline: checked after the stop: raises when the connection was closed for good.
        health: the process's probes, ready only while ``probe()``'s subscriptions are served.
        probe: what ``health`` watches (read after the service started).

    Raises:
        ConnectionLost: the server closed the connection for good (from ``lifeline``).
    """
    await service.start()
    if health is not None and probe is not None:
        health.watch(*probe())
    freeze_startup_heap()
    log.info("%s", ready())
    try:
        await stop.wait()
    finally:
        if health is not None:
            await health.stop()
        await service.stop()
    if lifeline is not None:
        lifeline.check()
