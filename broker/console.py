"""The brokers' side of the operator console: status, recent requests, who is an admin,
tenants and keys, spend, and cancelling any tenant's batch.

| subject                    | who answers     | body                                          |
|----------------------------|-----------------|-----------------------------------------------|
| ``llm.admin.status``       | every broker    | :meth:`BrokerStatus.report`                   |
| ``llm.admin.requests``     | every broker    | ``{"id", "requests": [...]}``                 |
| ``llm.admin.authorize``    | one broker      | ``{"admin": bool, "keys": bool}``             |
| ``llm.admin.keys``         | one broker      | list / create / update / revoke run-time keys |
| ``llm.admin.keys.reload``  | every broker    | ``{"reloaded": true}`` once keys are re-read  |
| ``llm.admin.spend``        | one broker      | spend per tenant, model and tier this period  |
| ``llm.admin.batch.cancel`` | one broker      | the cancelled batch                           |
| ``llm.admin.cache.size``   | one broker      | the shared L2's entries and bytes, or nulls   |
| ``llm.admin.audit.report`` | one broker      | (no reply) a console request the bridge refused |

These carry a few messages a second while a console is open and none otherwise. NATS
permissions decide who may publish them (see ``nats/auth.conf``); the bridge lets only an
admin key (or, with no keys configured, a loopback caller) through, and forwards it: with
admin keys configured every subject but ``llm.admin.authorize`` wants one
(:func:`broker.admin.require_admin`). Key changes, reloads and batch cancels are recorded in
the audit trail (:mod:`broker.audit`) with their outcome, refused ones too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from broker.admin import AdminRefused, require_admin
from broker.admission.admit import Admission
from broker.audit.actions import describe, failure_detail
from broker.audit.trail import AdminAudit
from broker.batch.api import ApiError
from broker.batch.engine import BatchEngine
from broker.cache.response import ResponseCache
from broker.config import Config
from broker.status import BrokerStatus
from broker.tenancy.budget import BY_MODEL_PREFIX, BY_TIER_PREFIX, SPEND_PREFIX, period_key
from broker.tenancy.grants import (
    GRANT_FIELDS,
    Grant,
    grant_id,
    parse_run_time_value,
    run_time_value,
)
from broker.tenancy.limits import window_keys
from broker.tenancy.tenants import REDIS_KEYS, KeyRing, hash_key, new_key
from broker.upstream.router import Router
from schemas import error_body, headers, subjects
from schemas.names import NAME_RULE, is_name

if TYPE_CHECKING:
    import redis.asyncio as redis

__all__ = ["ConsoleEndpoints", "ConsoleError"]

log = logging.getLogger("llm_edge.broker")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])
#: Bound on one Redis call made for the console (the console asks again within a second).
REDIS_TIMEOUT_S = 1.0


class ConsoleError(Exception):
    """A console command the broker refuses (``status`` is the reply's ``Llm-Status``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ConsoleEndpoints:
    """Subscribes the console subjects on the broker's connection.

    Args:
        nc: the broker's connection.
        config: the configuration (tenants, deployments, console keys).
        status: this broker's counters and recent requests.
        router: breakers and per-deployment statistics.
        keys: who is who.
        cache: the response cache, if any.
        redis_client: where run-time keys and spend live, if anywhere.
        reload_keys: re-read the run-time keys now (after a create or revoke).
        batch: the batch engine, if this broker runs one.
        in_flight: requests being worked on.
        service_id: this broker's micro service id (the console joins on it).
        admission: who waits for capacity, and this broker's shares of limits.
        audit: where admin actions are recorded (``None``: nowhere).
    """

    def __init__(
        self,
        nc: Client,
        config: Config,
        *,
        status: BrokerStatus,
        router: Router,
        keys: KeyRing,
        cache: ResponseCache | None,
        redis_client: redis.Redis | None,
        reload_keys: Callable[[], Awaitable[None]],
        batch: BatchEngine | None,
        in_flight: Callable[[], int],
        service_id: Callable[[], str],
        admission: Admission | None = None,
        audit: AdminAudit | None = None,
    ) -> None:
        self._admission = admission
        self._nc = nc
        self._config = config
        self._status = status
        self._router = router
        self._keys = keys
        self._cache = cache
        self._redis = redis_client
        self._reload_keys = reload_keys
        self._batch = batch
        self._in_flight = in_flight
        self._service_id = service_id
        self._audit = audit
        self._deployments = {d.name: d for m in config.models.values() for d in m.deployments}
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        """Subscribe: status and recent requests on every broker, the rest in the queue group."""
        everyone: dict[str, Callable[[dict[str, Any], dict[str, str]], Awaitable[Any]]] = {
            subjects.ADMIN_STATUS: self.status,
            subjects.ADMIN_REQUESTS: self.requests,
            subjects.ADMIN_KEYS_RELOAD: self.reload,
        }
        one: dict[str, Callable[[dict[str, Any], dict[str, str]], Awaitable[Any]]] = {
            subjects.ADMIN_AUTHORIZE: self.authorize,
            subjects.ADMIN_KEYS: self.keys,
            subjects.ADMIN_SPEND: self.spend,
            subjects.ADMIN_BATCH_CANCEL: self.cancel_batch,
            subjects.ADMIN_CACHE_SIZE: self.cache_size,
        }
        for table, queue in ((everyone, ""), (one, subjects.BROKER_QUEUE)):
            for subject, handler in table.items():
                admin_only = subject != subjects.ADMIN_AUTHORIZE
                self._subs.append(
                    await self._nc.subscribe(
                        subject, queue=queue, cb=self._serving(handler, admin_only=admin_only)
                    )
                )
        if self._audit is not None:
            report = self._audit.on_report
            self._subs.append(
                await self._nc.subscribe(
                    subjects.ADMIN_AUDIT_REPORT, queue=subjects.BROKER_QUEUE, cb=report
                )
            )

    async def stop(self) -> None:
        """Unsubscribe."""
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = []

    def _serving(
        self,
        handler: Callable[[dict[str, Any], dict[str, str]], Awaitable[Any]],
        *,
        admin_only: bool,
    ) -> Callable[[Msg], Awaitable[None]]:
        async def serve(msg: Msg) -> None:
            if not msg.reply:
                return
            hdrs = msg.headers or {}
            body: dict[str, Any] = {}
            result: Any = None
            try:
                if admin_only:
                    require_admin(self._keys, hdrs.get(headers.AUTHORIZATION))
                body = _decoder.decode(msg.data) if msg.data.strip() else {}
                if not self._admits(msg.subject, body):  # not recorded: the trail is full
                    refusal = "the audit trail cannot be written now: retry later"
                    await self._answer(msg, 503, error_body(503, "audit_unavailable", refusal))
                    return
                result = await handler(body, hdrs)
                status, data = 200, _encoder.encode(result)
            except AdminRefused as exc:
                status, data = exc.status, error_body(exc.status, exc.code, exc.message)
            except ConsoleError as exc:
                status, data = exc.status, error_body(exc.status, exc.code, str(exc))
            except ApiError as exc:
                status, data = exc.status, error_body(exc.status, exc.code, exc.message)
            except (msgspec.MsgspecError, TypeError, ValueError) as exc:
                status, data = 400, error_body(400, "invalid_request", str(exc))
            except Exception:  # Redis down, a bug: the console shows the error
                log.exception("console command on %s failed", msg.subject)
                status, data = 503, error_body(503, "unavailable", "the command failed")
            self._record(msg.subject, body, result=result, hdrs=hdrs, status=status, reply=data)
            await self._answer(msg, status, data)

        return serve

    async def _answer(self, msg: Msg, status: int, data: bytes) -> None:
        with contextlib.suppress(Exception):
            await self._nc.publish(msg.reply, data, headers={headers.STATUS: str(status)})

    def _admits(self, subject: str, body: dict[str, Any]) -> bool:
        """Whether a command may run: one the audit trail records needs room in it."""
        return self._audit is None or describe(subject, body) is None or self._audit.admits()

    def _record(
        self,
        subject: str,
        body: dict[str, Any],
        *,
        result: Any,
        hdrs: dict[str, str],
        status: int,
        reply: bytes,
    ) -> None:
        """Record an admin command answered (its outcome from the reply's status)."""
        described = describe(subject, body, result) if self._audit is not None else None
        if described is None or self._audit is None:
            return
        action, params = described
        detail = "" if status == 200 else failure_detail(reply)
        self._audit.record(action, hdrs, status=status, params=params, detail=detail)

    async def status(self, body: dict[str, Any], hdrs: dict[str, str]) -> dict[str, Any]:
        """This broker's live state."""
        return self._status.report(
            service_id=self._service_id(),
            router=self._router,
            deployments=self._deployments,
            cache=self._cache,
            in_flight=self._in_flight(),
            admission=self._admission,
        )

    async def cache_size(self, body: dict[str, Any], hdrs: dict[str, str]) -> dict[str, Any]:
        """The shared L2's entries and bytes (``null`` when there is none, or it is down)."""
        l2 = self._cache.l2 if self._cache is not None else None
        size = await l2.size() if l2 is not None else None
        if size is None:
            backend = l2.backend.name if l2 is not None else None
            return {"backend": backend, "entries": None, "bytes": None, "scope": None}
        return {
            "backend": size.backend,
            "entries": size.entries,
            "bytes": size.bytes,
            "scope": size.scope,
        }

    async def requests(self, body: dict[str, Any], hdrs: dict[str, str]) -> dict[str, Any]:
        """This broker's recent request records, newest first."""
        return {"id": self._service_id(), "requests": self._status.recent(body)}

    async def authorize(self, body: dict[str, Any], hdrs: dict[str, str]) -> dict[str, Any]:
        """``admin``: the caller's key opens the console; ``keys``: any key is configured."""
        keys = self._keys
        keys_configured = keys.required or keys.unknown or bool(keys.console_keys)
        return {
            "admin": await self._keys.admin(hdrs.get(headers.AUTHORIZATION)),
            "keys": keys_configured,
        }

    async def keys(self, body: dict[str, Any], hdrs: dict[str, str]) -> dict[str, Any]:
        """``list`` tenants and keys, ``create`` a run-time key (shown once; with its own model
        list and limits when given), ``update`` a run-time key's model list and limits,
        ``revoke`` one."""
        action = body.get("action", "list")
        if action == "list":
            return await self._tenants()
        client = self._need_redis("run-time keys")
        if action == "create":
            tenant = body.get("tenant")
            if not isinstance(tenant, str) or not is_name(tenant):
                raise ConsoleError(400, "invalid_request", f"tenant must be {NAME_RULE}")
            key = new_key()
            key_hash = hash_key(key)
            grant = self._grant(tenant, key_hash, body)
            await client.hset(REDIS_KEYS, key_hash, run_time_value(tenant, grant))
            await self._reload_keys()
            return {"tenant": tenant, "key": key, "hash": key_hash, **grant}
        if action == "update":
            key_hash = str(body.get("hash", ""))
            stored = await client.hget(REDIS_KEYS, key_hash)
            if stored is None:
                raise ConsoleError(404, "key_not_found", "no run-time key with that hash")
            tenant, _ = parse_run_time_value(key_hash, _text(stored))
            grant = self._grant(tenant, key_hash, body)
            await client.hset(REDIS_KEYS, key_hash, run_time_value(tenant, grant))
            await self._reload_keys()
            return {"tenant": tenant, "hash": key_hash, **grant}
        if action == "revoke":
            key_hash = str(body.get("hash", ""))
            if not await client.hdel(REDIS_KEYS, key_hash):
                raise ConsoleError(404, "key_not_found", "no run-time key with that hash")
            await self._reload_keys()
            return {"revoked": key_hash}
        raise ConsoleError(400, "invalid_request", "action must be list, create, update or revoke")

    def _grant(self, tenant: str, key_hash: str, body: dict[str, Any]) -> dict[str, Any]:
        """The grant fields of a create or update command, checked against the tenant's
        limits (a key's only narrow them); ``null`` or an empty list leaves a field unset."""
        fields = {k: body[k] for k in GRANT_FIELDS if body.get(k) not in (None, [], "")}
        try:
            grant = Grant.from_mapping("key", grant_id(key_hash), fields)
            grant.within("key", self._keys.named(tenant))
        except ValueError as exc:
            raise ConsoleError(400, "invalid_request", str(exc)) from None
        return grant.describe()

    async def reload(self, body: dict[str, Any], hdrs: dict[str, str]) -> dict[str, Any]:
        """Re-read the run-time keys now (not at the next refresh), then say so."""
        await self._reload_keys()
        return {"reloaded": True}

    async def _run_time_keys(self) -> dict[str, str]:
        if self._redis is None:
            return {}
        stored = await self._redis.hgetall(REDIS_KEYS)
        return {_text(k): _text(v) for k, v in stored.items()}

    async def _tenants(self) -> dict[str, Any]:
        run_time = {}
        for key_hash, value in (await self._run_time_keys()).items():
            try:
                run_time[key_hash] = parse_run_time_value(key_hash, value)
            except ValueError:  # left out by the brokers too: listed so it can be revoked
                run_time[key_hash] = ("?", None)
        names = {*self._config.tenants, *(t for t, _ in run_time.values())}
        tenants = []
        for name in sorted(names or {subjects.DEFAULT_TENANT}):
            tenant = self._keys.named(name)
            grants = dict(tenant.key_grants)
            keys = [_key_row(h, "config", grants.get(h)) for h in tenant.keys] + [
                _key_row(h, "run-time", g) for h, (t, g) in sorted(run_time.items()) if t == name
            ]
            tenants.append(
                {
                    "name": name,
                    "static_keys": len(tenant.keys),
                    "admin": tenant.admin,
                    "rpm": tenant.rpm,
                    "tpm": tenant.tpm,
                    "budget_usd": tenant.budget_usd,
                    "budget_period": tenant.budget_period,
                    "models": list(tenant.models.patterns),
                    "keys": keys,
                }
            )
        return {"tenants": tenants, "run_time_keys": self._redis is not None}

    async def spend(self, body: dict[str, Any], hdrs: dict[str, str]) -> dict[str, Any]:
        """Each tenant's spend this period, by model and by service tier, against its
        budget."""
        if self._redis is None:
            return {"tenants": [], "shared": False}
        tenants = (await self._tenants())["tenants"]
        now = self._status.now()
        out = []
        for tenant in tenants:
            label, left = period_key(tenant["budget_period"], now)
            suffix = f"{tenant['name']}:{label}"
            total = await self._redis.get(SPEND_PREFIX + suffix)
            by_model = await self._redis.hgetall(BY_MODEL_PREFIX + suffix)
            by_tier = await self._redis.hgetall(BY_TIER_PREFIX + suffix)
            used = await self._redis.mget(window_keys(tenant["name"], int(now // 60)))
            out.append(
                {
                    "tenant": tenant["name"],
                    "period": label,
                    "resets_in_s": round(left),
                    "spent_usd": float(total or 0.0),
                    "budget_usd": tenant["budget_usd"],
                    "by_model": {_text(k): float(v) for k, v in by_model.items()},
                    "by_tier": {_text(k): float(v) for k, v in by_tier.items()},
                    "rpm": tenant["rpm"],
                    "tpm": tenant["tpm"],
                    # this minute's counts, shared by every broker (tenants with limits)
                    "rpm_used": int(used[0] or 0),
                    "tpm_used": int(used[1] or 0),
                }
            )
        return {"tenants": out, "shared": True}

    async def cancel_batch(self, body: dict[str, Any], hdrs: dict[str, str]) -> Any:
        """Cancel a batch whoever owns it."""
        if self._batch is None:
            raise ConsoleError(503, "batch_disabled", "this broker runs no batch engine")
        batch_id = str(body.get("id", ""))
        record = await self._batch.store.get(batch_id)
        if record is None:
            raise ConsoleError(404, "batch_not_found", f"no batch {batch_id!r}")
        return await self._batch.api.cancel({"id": batch_id}, record.tenant)

    def _need_redis(self, what: str) -> redis.Redis:
        if self._redis is None:
            raise ConsoleError(400, "invalid_request", f"{what} need Redis (--redis-url)")
        return self._redis


def _key_row(key_hash: str, source: str, grant: Grant | None) -> dict[str, Any]:
    """A key as the console lists it: its hash (never the key), where it is kept, and its
    own model list and limits."""
    return {"hash": key_hash, "source": source, **(grant.describe() if grant else {})}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
