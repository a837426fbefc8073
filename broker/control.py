"""The broker's control plane on FastStream: liveness, the model list, cache purges.

These subjects carry a handful of messages a minute, so FastStream's per-message cost does
not matter here; the data plane (``llm.chat``) uses the same connection directly. Every
admin reply carries ``Llm-Status`` like the data plane's, and failures are error envelopes.
Breaker overrides and purges are recorded in the audit trail (:mod:`broker.audit`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.nats import NatsBroker, NatsResponse

from broker.admin import AdminRefused, require_admin
from broker.audit.actions import describe, failure_detail
from broker.audit.trail import AdminAudit
from broker.cache.response import ResponseCache
from broker.config import Config
from broker.request import DEFAULT_TENANT
from broker.tenancy.tenants import KeyRing
from broker.upstream.breaker import BreakerState
from broker.upstream.router import Router
from edge_runtime.jetstream import JETSTREAM_UNAVAILABLE, UNAVAILABLE_RETRY_AFTER_S
from schemas import error_body, headers, subjects
from schemas.names import NAME_RULE, is_cache_key, is_name

__all__ = [
    "InvalidCommand",
    "breaker_command",
    "model_list",
    "purge_prefix",
    "register_control",
]

_STARTED = int(time.time())
log = logging.getLogger("llm_edge.broker")


def model_list(config: Config) -> dict[str, Any]:
    """OpenAI's ``GET /v1/models`` body for the configured models and aliases."""
    names = sorted(n for m in config.models.values() for n in (m.name, *m.aliases))
    return {
        "object": "list",
        "data": [
            {"id": n, "object": "model", "created": _STARTED, "owned_by": "llm-edge"} for n in names
        ],
    }


class InvalidCommand(ValueError):
    """An admin command the brokers refuse; ``param`` names the field at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def purge_prefix(command: dict[str, Any]) -> str:
    """The key prefix a purge command selects.

    ``{"all": true}`` purges everything, ``{"namespace": "ns", "tenant": "t"}`` one namespace
    (of the default tenant when ``tenant`` is absent), ``{"key": k}`` one entry (the
    ``X-Cache-Key`` of a reply). Names follow the request path's rule
    (:func:`schemas.names.is_name`), so no wildcard reaches a tier that would expand it.

    Raises:
        InvalidCommand: the command selects nothing, or a name breaks the rule.
    """
    if command.get("all") is True:
        return ""
    if "key" in command:
        if not is_cache_key(command["key"]):
            raise InvalidCommand(
                "key must be a whole X-Cache-Key: <tenant>:<namespace>:<digest hex>", "key"
            )
        return str(command["key"])
    if "namespace" in command:
        tenant = command.get("tenant", DEFAULT_TENANT)
        for field, value in (("namespace", command["namespace"]), ("tenant", tenant)):
            if not is_name(value):
                raise InvalidCommand(f"{field} must be {NAME_RULE}", field)
        return f"{tenant}:{command['namespace']}:"
    raise InvalidCommand('purge needs {"all": true}, {"namespace": "..."} or {"key": "..."}')


def breaker_command(router: Router, config: Config, command: dict[str, Any]) -> dict[str, Any]:
    """Apply ``{"action": "status|open|close|reset", "deployment": name}``; return the states.

    ``open`` and ``close`` pin the breaker (an operator override) until ``reset``.

    Raises:
        InvalidCommand: unknown action or deployment.
    """
    deployments = {d.name: d for m in config.models.values() for d in m.deployments}
    action = command.get("action", "status")
    name = command.get("deployment")
    if action != "status":
        if name not in deployments:
            raise InvalidCommand(
                f"unknown deployment {name!r}; known: {sorted(deployments)}", "deployment"
            )
        breaker = router.stats(deployments[name]).breaker
        if action == "open":
            breaker.force(BreakerState.OPEN)
        elif action == "close":
            breaker.force(BreakerState.CLOSED)
        elif action == "reset":
            breaker.reset()
        else:
            raise InvalidCommand(
                f"unknown action {action!r}: status, open, close or reset", "action"
            )
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


def _ok(body: dict[str, Any]) -> NatsResponse:
    return NatsResponse(body, headers={headers.STATUS: "200"})


def _invalid(message: str, param: str | None = None) -> NatsResponse:
    return NatsResponse(
        error_body(400, "invalid_request", message, param), headers={headers.STATUS: "400"}
    )


def _unavailable(message: str, what: str = "") -> NatsResponse:
    """503 with ``Retry-After``: a store the command needs cannot answer now (``what``: which,
    in the error code)."""
    code = f"{what}_unavailable" if what else "unavailable"
    return NatsResponse(
        error_body(503, code, message),
        headers={headers.STATUS: "503", headers.RETRY_AFTER: str(UNAVAILABLE_RETRY_AFTER_S)},
    )


def _refused(exc: AdminRefused) -> NatsResponse:
    return NatsResponse(
        error_body(exc.status, exc.code, exc.message), headers={headers.STATUS: str(exc.status)}
    )


#: Run an admin command (subject, body, the command itself), recording it.
Command = Callable[[], Awaitable[NatsResponse]]
Audited = Callable[[str, dict[str, Any], Command], Awaitable[NatsResponse]]


def _audited(broker: NatsBroker, audit: AdminAudit | None, keys: KeyRing) -> Audited:
    """Run an admin command, once its caller is an admin (:func:`_check_admin`), and record it
    (when the audit trail records it): refused with 503 while the trail cannot take records
    (fail closed), recorded with its outcome otherwise, refusals included."""

    async def run(subject: str, command: dict[str, Any], command_act: Command) -> NatsResponse:
        async def act() -> NatsResponse:
            try:
                _check_admin(broker, keys)
            except AdminRefused as exc:
                return _refused(exc)
            return await command_act()

        described = describe(subject, command) if audit is not None else None
        if described is None or audit is None:
            return await act()
        if not audit.admits():
            return _unavailable("the audit trail cannot be written now: retry later", "audit")
        response = await act()
        message = broker.context.get_local("message")  # FastStream's message being handled
        status = int((response.headers or {}).get(headers.STATUS, "200"))
        detail = "" if status == 200 else failure_detail(response.body)
        action, params = described
        hdrs = getattr(message, "headers", None) or {}
        audit.record(action, hdrs, status=status, params=params, detail=detail)
        return response

    return run


def _check_admin(broker: NatsBroker, keys: KeyRing) -> None:
    """Refuse the message being handled unless it carries an admin key (when keys are set).

    Raises:
        AdminRefused: 401 without a key, 403 with another.
    """
    message = broker.context.get_local("message")  # the one being handled
    hdrs = (message.headers if message is not None else None) or {}
    require_admin(keys, hdrs.get(headers.AUTHORIZATION))


def register_control(
    broker: NatsBroker,
    config: Config,
    cache: ResponseCache | None,
    router: Router,
    *,
    keys: KeyRing,
    audit: AdminAudit | None = None,
) -> None:
    """Add the control subscribers to a FastStream broker (``apply_types=False``).

    Breaker overrides and purges are admin commands: with admin keys configured each wants
    one (:func:`broker.admin.require_admin`); each is recorded in the audit trail, refused
    ones too.
    """
    audited = _audited(broker, audit, keys)

    @broker.subscriber(subjects.BREAKER_ADMIN)
    async def breakers(body: Any) -> NatsResponse:
        command = body if isinstance(body, dict) else {}
        return await audited(subjects.BREAKER_ADMIN, command, lambda: _breakers(command))

    async def _breakers(command: dict[str, Any]) -> NatsResponse:
        try:
            return _ok(breaker_command(router, config, command))
        except InvalidCommand as exc:
            return _invalid(str(exc), exc.param)

    @broker.subscriber(subjects.BROKER_PING, queue=subjects.BROKER_QUEUE)
    async def ping(body: Any) -> NatsResponse:
        return _ok({"status": "ok", "models": len(config.models), "cache": cache is not None})

    @broker.subscriber(subjects.CACHE_PURGE)
    async def purge(body: Any) -> NatsResponse:
        command = body if isinstance(body, dict) else {}
        return await audited(subjects.CACHE_PURGE, command, lambda: _purge(command))

    async def _purge(command: dict[str, Any]) -> NatsResponse:
        if cache is None:
            return _invalid("the cache is disabled")
        try:
            prefix = purge_prefix(command)
        except InvalidCommand as exc:
            return _invalid(str(exc), exc.param)
        try:
            purged = await cache.purge(prefix)
        except JETSTREAM_UNAVAILABLE as exc:  # the NATS KV L2 lost its quorum or JetStream
            log.warning("cache purge: JetStream unavailable (%r); answered 503", exc)
            return _unavailable("the L2 cache (JetStream) is unavailable; L1 was purged")
        except Exception:  # Redis down, or a bug: one answer all the same
            log.exception("cache purge failed")
            return NatsResponse(
                error_body(500, "internal_error", "the L2 purge failed; L1 was purged"),
                headers={headers.STATUS: "500"},
            )
        return _ok({"purged": purged})
