"""Every process registers as a NATS micro service, so ``$SRV.PING``, ``$SRV.INFO`` and
``$SRV.STATS`` find it (``nats micro ls`` lists them) and ``llm.status.<role>`` reports its
live state.

``$SRV.STATS`` carries the same live state in each endpoint's ``data`` (plus the connection's
message counts), and the metadata names the host and process: one scatter-gather on
``$SRV.STATS`` sees every process of the mesh, which is what the operator console shows."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from importlib import metadata
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

__all__ = ["register"]

_encoder = msgspec.json.Encoder()


def _version() -> str:
    try:
        return metadata.version("llm-edge-broker")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0.0.0"


async def register(
    nc: Client, role: str, subjects: list[str], status: Callable[[], dict[str, Any]]
) -> Service:
    """Register ``llm-edge-<role>`` with a ``status`` endpoint.

    Args:
        nc: the process's connection.
        role: ``broker``, ``worker-<provider>``, ``bridge``.
        subjects: the subjects the process serves (shown in INFO metadata).
        status: live numbers for the status endpoint (in flight, counts ...).
    """

    async def on_status(request: Request) -> None:
        await request.respond(_encoder.encode(status()))

    def on_stats(_: object) -> dict[str, Any]:
        stats = nc.stats
        return {**status(), "msgs_in": stats["in_msgs"], "msgs_out": stats["out_msgs"]}

    service = await add_service(
        nc,
        name=f"llm-edge-{role}",
        version=_version(),
        description=f"LLM Edge Broker {role}",
        metadata={
            "subjects": ",".join(subjects),
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
        },
        stats_handler=on_stats,
    )
    await service.add_endpoint(name="status", subject=f"llm.status.{role}", handler=on_status)
    return service
