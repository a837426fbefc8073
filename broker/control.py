"""The broker's control plane on FastStream: liveness, the model list, cache purges.

These subjects carry a handful of messages a minute, so FastStream's per-message cost does
not matter here; the data plane (``llm.chat``) uses the same connection directly.
"""

from __future__ import annotations

import time
from typing import Any

from faststream.nats import NatsBroker

from broker.cache.response import ResponseCache
from broker.config import Config
from broker.request import DEFAULT_TENANT
from broker.upstream.breaker import BreakerState
from broker.upstream.router import Router
from schemas import subjects

__all__ = ["breaker_command", "model_list", "purge_prefix", "register_control"]

_STARTED = int(time.time())


def model_list(config: Config) -> dict[str, Any]:
    """OpenAI's ``GET /v1/models`` body for the configured models and aliases."""
    names = sorted(n for m in config.models.values() for n in (m.name, *m.aliases))
    return {
        "object": "list",
        "data": [
            {"id": n, "object": "model", "created": _STARTED, "owned_by": "llm-edge"} for n in names
        ],
    }


def purge_prefix(command: dict[str, Any]) -> str:
    """The key prefix a purge command selects.

    ``{"all": true}`` purges everything, ``{"namespace": "ns"}`` one namespace, ``{"key": k}``
    one entry (the ``X-Cache-Key`` of a reply).

    Raises:
        ValueError: the command selects nothing.
    """
    if command.get("all") is True:
        return ""
    if isinstance(command.get("key"), str) and command["key"].count(":") == 2:
        return str(command["key"])
    if isinstance(command.get("namespace"), str):
        tenant = command.get("tenant", DEFAULT_TENANT)
        return f"{tenant}:{command['namespace']}:"
    raise ValueError('purge needs {"all": true}, {"namespace": "..."} or {"key": "..."}')


def breaker_command(router: Router, config: Config, command: dict[str, Any]) -> dict[str, Any]:
    """Apply ``{"action": "status|open|close|reset", "deployment": name}``; return the states.

    ``open`` and ``close`` pin the breaker (an operator override) until ``reset``.

    Raises:
        ValueError: unknown action or deployment.
    """
    deployments = {d.name: d for m in config.models.values() for d in m.deployments}
    action = command.get("action", "status")
    name = command.get("deployment")
    if action != "status":
        if name not in deployments:
            raise ValueError(f"unknown deployment {name!r}; known: {sorted(deployments)}")
        breaker = router.stats(deployments[name]).breaker
        if action == "open":
            breaker.force(BreakerState.OPEN)
        elif action == "close":
            breaker.force(BreakerState.CLOSED)
        elif action == "reset":
            breaker.reset()
        else:
            raise ValueError(f"unknown action {action!r}: status, open, close or reset")
    states = {n: router.stats(d).breaker for n, d in sorted(deployments.items())}
    return {
        "breakers": {
            n: {
                "state": b.state.name.lower(),
                "forced": b.forced is not None,
                "retry_after": round(b.retry_after(), 3),
            }
            for n, b in states.items()
        }
    }


def _invalid(message: str) -> dict[str, Any]:
    return {
        "error": {"type": "invalid_request_error", "code": "invalid_request", "message": message}
    }


def register_control(
    broker: NatsBroker, config: Config, cache: ResponseCache | None, router: Router
) -> None:
    """Add the control subscribers to a FastStream broker (``apply_types=False``)."""

    @broker.subscriber(subjects.BREAKER_ADMIN)
    async def breakers(body: Any) -> dict[str, Any]:
        try:
            return breaker_command(router, config, body if isinstance(body, dict) else {})
        except ValueError as exc:
            return _invalid(str(exc))

    @broker.subscriber(subjects.BROKER_PING, queue=subjects.BROKER_QUEUE)
    async def ping(body: Any) -> dict[str, Any]:
        return {"status": "ok", "models": len(config.models), "cache": cache is not None}

    @broker.subscriber(subjects.CACHE_PURGE)
    async def purge(body: Any) -> dict[str, Any]:
        if cache is None:
            return _invalid("the cache is disabled")
        try:
            prefix = purge_prefix(body if isinstance(body, dict) else {})
        except ValueError as exc:
            return _invalid(str(exc))
        return {"purged": await cache.purge(prefix)}
