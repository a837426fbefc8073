"""The broker process: control plane on FastStream, ``llm.chat`` on the same NATS connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from faststream.nats import NatsBroker
from faststream.nats.security import NatsToken, NatsUserPassword
from faststream.security import BaseSecurity
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.micro.service import Service
from nats.nuid import NUID

from broker import metrics
from broker.admission.admit import Admission
from broker.admission.allocator import Allocator
from broker.admission.probes import Prober
from broker.admission.stats import MeshStats
from broker.audit.actions import config_summary
from broker.audit.trail import AdminAudit
from broker.batch.engine import BatchEngine
from broker.batch.offload import Spend
from broker.cache.front import ReadThrough
from broker.cache.l2 import GuardedL2, L2Backend
from broker.cache.l2_nats import NatsKVL2
from broker.cache.response import ResponseCache
from broker.cache.semantic import SemanticCache
from broker.cache.settings import L2Kind
from broker.config import Config
from broker.console import ConsoleEndpoints
from broker.control import register_control
from broker.embeddings.pipeline import EmbeddingsPipeline
from broker.embeddings.prepare import EmbeddingPreparer
from broker.endpoints import Endpoints
from broker.guard import Guard
from broker.pipeline import ChatPipeline
from broker.prepare import RequestPreparer
from broker.record import RequestRecord
from broker.repeats import create_once_bucket
from broker.replies.heartbeat import Heartbeats
from broker.responses.api import ResponsesApi
from broker.responses.background import BackgroundJobs
from broker.responses.store import ResponseStore
from broker.status import BrokerStatus
from broker.tenancy.budget import SpendLedger
from broker.tenancy.limits import RateLimiter
from broker.tenancy.meter import Meter
from broker.tenancy.tenants import ANONYMOUS, REDIS_KEYS, Caller, KeyRing
from broker.upstream.calls import Upstream
from broker.upstream.fallback import Fallbacks
from broker.upstream.forward import Forwarder
from broker.upstream.resilience import Resilient
from broker.upstream.router import Router
from edge_runtime.audit import AuditWriter, audit_stream_config
from edge_runtime.discovery import register
from edge_runtime.health import Health
from edge_runtime.jetstream import check_replicas
from edge_runtime.lifecycle import serve
from edge_runtime.local import LocalRoutes, local_view
from edge_runtime.process import (
    DEFAULT_INBOX_PREFIX,
    PENDING_BYTES_LIMIT,
    PENDING_MSGS_LIMIT,
    STOP_STEP_S,
    Lifeline,
    close_quietly,
    settle,
)
from edge_runtime.servers import ServerList, parse_servers
from schemas import headers, subjects

if TYPE_CHECKING:
    import redis.asyncio as redis

    from broker.tenancy.jwks import KeySource
    from broker.tenancy.jwt import JwtVerifier

__all__ = ["BrokerService"]

log = logging.getLogger("llm_edge.broker")


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerOptions:
    """Where the broker connects."""

    nats_url: str  # one server or a comma-separated list (see edge_runtime.servers)
    redis_url: str | None = None
    name: str = "llm-edge-broker"
    tls: ssl.SSLContext | None = None
    inbox_prefix: str = DEFAULT_INBOX_PREFIX  # replies to this broker's requests


class BrokerService:
    """One broker process (many run side by side in the brokers' queue group).

    Args:
        config: the validated configuration.
        options: connection targets.
    """

    def __init__(
        self,
        config: Config,
        options: BrokerOptions,
        lifeline: Lifeline | None = None,
        routes: LocalRoutes | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self._lifeline = lifeline
        self._routes = routes
        self._view: Client | None = None
        servers = parse_servers(options.nats_url)
        self._fs = NatsBroker(
            list(servers.servers),
            name=options.name,
            apply_types=False,
            logger=None,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            security=_security(servers, options.tls),
            closed_cb=lifeline.closed if lifeline is not None else None,
            inbox_prefix=options.inbox_prefix,
        )
        self._subs: list[Subscription] = []
        self._l2: L2Backend | None = None
        self._semantic: SemanticCache | None = None
        self.cache: ResponseCache | None = None
        self.pipeline: ChatPipeline | None = None
        self.embeddings: EmbeddingsPipeline | None = None
        self.batch: BatchEngine | None = None
        self.background: BackgroundJobs | None = None
        self.responses: ResponsesApi | None = None
        self._keys_task: asyncio.Task[None] | None = None
        self._jwks: KeySource | None = None
        self._jwks_task: asyncio.Task[None] | None = None
        self._micro: Service | None = None
        self._redis: redis.Redis | None = None
        self._heartbeats: Heartbeats | None = None
        self.status = BrokerStatus()
        self._console: ConsoleEndpoints | None = None
        self.router: Router | None = None
        self.admission: Admission | None = None
        self.allocator: Allocator | None = None
        self.mesh: MeshStats | None = None
        self.prober: Prober | None = None
        self._audit_writer: AuditWriter | None = None

    @property
    def nc(self) -> Client:
        """The NATS connection FastStream holds (its local-first view when roles of this
        process share routes)."""
        if self._view is None:
            self._view = local_view(self._fs.connection, self._routes)
        return self._view

    async def start(self) -> None:
        """Connect, open the cache tiers, subscribe."""
        await self._fs.connect()
        check_replicas(self.nc, self.config.nats.replicas)
        self.cache = await self._open_cache()
        self._redis = redis_client = None
        if self.options.redis_url:  # redis-py loads only when Redis is used (8 MiB otherwise)
            from broker.redis_conn import request_path_client  # noqa: PLC0415

            self._redis = redis_client = request_path_client(self.options.redis_url)
        keys = KeyRing(
            self.config.tenants,
            required=self.config.auth_required,
            console_keys=self.config.console.keys,
            jwt=await self._open_jwt(),
        )
        #: One guard for the request path's Redis: a failure seen by either wing skips it for both.
        self.redis_guard = Guard("redis")
        self._heartbeats = Heartbeats(self.nc, asyncio.get_running_loop().time)
        self._heartbeats.start()
        ledger = SpendLedger(redis_client, guard=self.redis_guard)
        assembly = assemble_pipeline(
            self.nc,
            self.config,
            self.cache,
            keys=keys,
            limiter=RateLimiter(redis_client, guard=self.redis_guard),
            ledger=ledger,
            status=self.status,
            heartbeats=self._heartbeats,
        )
        self.pipeline, self.embeddings = assembly.pipeline, assembly.embeddings
        self.router = assembly.router
        router = assembly.router
        await self._start_admission(assembly)
        if redis_client is not None:
            keys.unknown = True  # until Redis answers: refused, never served open
            with contextlib.suppress(Exception):  # first snapshot now, so keys work at once
                async with asyncio.timeout(1):
                    await _load_keys(redis_client, keys)
            self._keys_task = asyncio.create_task(
                _refresh_keys(redis_client, keys), name="key-refresh"
            )
        audit = self._audit_trail(keys)
        register_control(self._fs, self.config, self.cache, router, keys=keys, audit=audit)
        pipeline, embeddings = self.pipeline, self.embeddings

        def in_flight() -> int:
            return pipeline.in_flight + embeddings.in_flight

        loop_time = asyncio.get_running_loop().time
        endpoints = Endpoints(
            self.nc, pipeline, keys, self.config, loop_time, embeddings=embeddings
        )
        self.responses = responses = await self._open_responses(
            pipeline, assembly.meter, keys, endpoints.subject_caller
        )
        served = {**endpoints.queue_subjects(), **responses.subjects()}
        self._subs = [
            await self.nc.subscribe(
                subject,
                queue=subjects.BROKER_QUEUE,
                cb=cb,
                pending_msgs_limit=PENDING_MSGS_LIMIT,
                pending_bytes_limit=PENDING_BYTES_LIMIT,
            )
            for subject, cb in served.items()
        ]
        self._subs.append(await self.nc.subscribe(subjects.CANCEL, cb=endpoints.on_cancel))
        if self.config.batch.enabled:
            self.batch = BatchEngine(
                self.nc,
                pipeline.handle,
                self.config.batch,
                interactive=lambda: loop_time() - endpoints.last_interactive < 1.0,
                keys=keys,
                replicas=self.config.nats.replicas,
                endpoints={"/v1/embeddings": embeddings.handle},
                models=self.config.models,
                spend=_offload_spend(ledger, keys, self.config.broker.tenant_metrics),
            )
            await self.batch.start()
        # after the cache's and the batch's assets: they keep the places they had before it
        await create_once_bucket(self.nc, self.config.nats.replicas)
        if self.background is not None:
            await self.background.start()
        if self._audit_writer is not None:  # the newest asset: last, for the same reason
            await self._audit_writer.open()
            self._audit_writer.start()
        self._micro = await register(
            self.nc,
            "broker",
            [
                subjects.CHAT,
                subjects.MESSAGES,
                subjects.COUNT_TOKENS,
                subjects.EMBEDDINGS,
                subjects.RESPONSES,
            ],
            lambda: {
                "in_flight": in_flight(),
                "l2": self.l2_name,
                "batch": self.batch is not None,
                "requests": self.status.requests,
                "errors": self.status.errors,
            },
        )
        micro = self._micro
        self._console = ConsoleEndpoints(
            self.nc,
            self.config,
            status=self.status,
            router=router,
            keys=keys,
            cache=self.cache,
            redis_client=redis_client,
            reload_keys=lambda: _load_keys(redis_client, keys) if redis_client else _nothing(),
            batch=self.batch,
            in_flight=in_flight,
            service_id=lambda: micro.id,
            admission=self.admission,
            audit=audit,
        )
        await self._console.start()
        await self._fs.start()  # last: the ping it answers means everything is serving
        await self.nc.flush()

    async def _open_responses(
        self,
        pipeline: ChatPipeline,
        meter: Meter,
        keys: KeyRing,
        subject_caller: Callable[[str], Caller],
    ) -> ResponsesApi:
        """The Responses API's wing: its store and background jobs when JetStream has them
        (without, responses are answered and not stored)."""
        settings = self.config.responses
        replicas = self.config.nats.replicas
        store = None
        try:
            store = await ResponseStore.open(
                self.nc, ttl_s=settings.ttl_s, max_bytes=settings.max_bytes, replicas=replicas
            )
            if settings.background:
                self.background = BackgroundJobs(
                    self.nc,
                    store,
                    pipeline.handle,
                    pipeline.cancel,
                    meter=meter,
                    keys=keys,
                    settings=settings,
                    replicas=replicas,
                )
                await self.background.open()
        except (TimeoutError, NatsError) as exc:
            log.warning("responses are not stored (no JetStream: %s)", exc)
            self.background = None
        return ResponsesApi(
            self.nc,
            pipeline,
            keys,
            store,
            jobs=self.background,
            subject_caller=subject_caller,
        )

    async def _start_admission(self, assembly: Assembly) -> None:
        """Share deployments' limits and statistics with the other brokers, and probe idle
        deployments. The limits' bucket is opened only when some deployment has limits (or
        a provider names some later)."""
        loop = asyncio.get_running_loop()
        settings = self.config.admission
        broker_id = assembly.new_id()
        self.admission = admission = assembly.admission
        self.allocator = Allocator(
            self.nc,
            admission,
            broker_id=broker_id,
            settings=settings,
            replicas=self.config.nats.replicas,
            clock=loop.time,
            brokers=lambda: 1 + (self.mesh.peers() if self.mesh is not None else 0),
        )
        admission.on_demand = self.allocator.nudge
        if admission.limits:
            try:
                await self.allocator.start()
            except (NatsError, TimeoutError) as exc:
                log.warning("deployment limits split evenly by broker (no JetStream: %s)", exc)
                self.allocator.split_evenly()
        deployments = {d.name: d for m in self.config.models.values() for d in m.deployments}
        self.mesh = MeshStats(
            self.nc,
            assembly.router,
            admission,
            deployments,
            broker_id=broker_id,
            settings=settings,
            clock=loop.time,
        )
        await self.mesh.start()
        mesh = self.mesh
        self.prober = Prober(
            assembly.forwarder,
            assembly.router,
            admission,
            deployments.values(),
            settings,
            busy_elsewhere=lambda name: any(n for _, n, _ in mesh.latencies(name)),
            new_id=assembly.new_id,
            clock=loop.time,
        )
        self.prober.start()

    async def _stop_admission(self) -> None:
        if self.prober is not None:
            await self.prober.stop()
        if self.mesh is not None:
            await self.mesh.stop()
        if self.allocator is not None:
            await settle(self.allocator.stop(), STOP_STEP_S)

    def _audit_trail(self, keys: KeyRing) -> AdminAudit | None:
        """The audit trail's writer (started once the stream exists) and what records to it;
        the first record says this broker started, with what configuration."""
        settings = self.config.audit
        if not settings.enabled:
            return None
        stream = audit_stream_config(
            max_age_s=settings.max_age_s,
            max_bytes=settings.max_bytes,
            replicas=self.config.nats.replicas,
        )
        who = f"{socket.gethostname()} pid {os.getpid()}"

        def writer() -> str:  # the service id is known once the broker registered
            return f"{who} {self.service_id}".rstrip()

        self._audit_writer = AuditWriter(
            self.nc.jetstream(timeout=AUDIT_TIMEOUT_S),
            stream,
            writer,
            max_pending=settings.max_pending,
            clock=time.time,
        )
        audit = AdminAudit(self._audit_writer, keys, time.time)
        audit.started(config_summary(self.config))
        return audit

    async def _open_jwt(self) -> JwtVerifier | None:
        """The JWT verifier of ``[auth.jwt]``: its keys loaded now (bounded; a failure leaves
        JWT callers refused with 503 until a refresh succeeds) and refreshed in the background."""
        settings = self.config.jwt
        if settings is None:
            return None
        from broker.tenancy.jwks import JwksError, KeySource  # noqa: PLC0415  (joserfc: ~100 ms)
        from broker.tenancy.jwt import JwtVerifier  # noqa: PLC0415

        source = KeySource(
            url=settings.jwks_url,
            file=settings.jwks_path,
            timeout_s=settings.jwks_timeout_s,
            min_refresh_s=settings.jwks_min_refresh_s,
            clock=asyncio.get_running_loop().time,
        )
        self._jwks = source
        try:
            await source.load()
        except JwksError as exc:
            log.warning("JWT issuer keys not loaded (%s): JWT callers get 503 until they are", exc)
        self._jwks_task = asyncio.create_task(
            source.run(settings.jwks_refresh_s), name="jwks-refresh"
        )
        return JwtVerifier(settings, source, self.config.tenants)

    async def _close_jwt(self) -> None:
        if self._jwks_task is not None:
            self._jwks_task.cancel()
        if self._jwks is not None:
            await settle(self._jwks.aclose(), STOP_STEP_S)

    async def _open_cache(self) -> ResponseCache | None:
        settings = self.config.cache
        if not settings.enabled:
            return None
        kind = settings.l2
        if kind is L2Kind.AUTO:
            kind = L2Kind.REDIS if self.options.redis_url else L2Kind.NATS
        if kind is L2Kind.REDIS:
            if not self.options.redis_url:
                raise ValueError("cache.l2 = 'redis' needs REDIS_URL / --redis-url")
            from broker.cache.l2_redis import RedisL2  # noqa: PLC0415  (only with Redis)

            self._l2 = RedisL2.from_url(self.options.redis_url)
        elif kind is L2Kind.NATS:
            self._l2 = await NatsKVL2.open(
                self.nc, max_bytes=settings.l2_nats_max_bytes, replicas=self.config.nats.replicas
            )
        guarded = None if self._l2 is None else GuardedL2(self._l2, timeout_s=settings.l2_timeout_s)
        if settings.semantic.enabled:
            from broker.cache.embedder import load_minilm  # noqa: PLC0415 - NumPy only when on

            embedder = await asyncio.to_thread(load_minilm)
            self._semantic = await SemanticCache.open(
                self.nc,
                settings.semantic,
                embedder,
                settings.l2_ttl_s,
                replicas=self.config.nats.replicas,
            )
        return ResponseCache(settings, guarded, semantic=self._semantic)

    async def _drain_requests(self, grace_s: float) -> None:
        """Wait for the chat and embeddings requests in flight (bounded, together)."""
        pipelines = [p for p in (self.pipeline, self.embeddings) if p is not None]
        await asyncio.gather(*(p.drain(grace_s) for p in pipelines))

    @property
    def service_id(self) -> str:
        """This broker's NATS micro service id (``$SRV`` discovery names it)."""
        return self._micro.id if self._micro is not None else ""

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """The request subscriptions (``llm.chat``, ``llm.messages``, ``llm.embeddings``,
        ``llm.cancel`` ...)."""
        return tuple(self._subs)

    @property
    def l2_name(self) -> str:
        """``redis``, ``nats-kv`` or ``off``."""
        return "off" if self._l2 is None else self._l2.name

    async def _stop_admin(self) -> None:
        """Stop answering the console, then write the audit records queued (bounded) while
        the connection is still up."""
        if self._console is not None:
            await self._console.stop()
        if self._audit_writer is not None:
            await self._audit_writer.stop(AUDIT_STOP_S)

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop taking requests, finish those in flight (bounded), disconnect."""
        for sub in self._subs:  # graceful: pending messages are still served
            await settle(sub.drain(), STOP_STEP_S)  # type: ignore[no-untyped-call]
        self._subs = []
        await self._stop_admin()
        if self.batch is not None:
            await self.batch.stop()
        if self.responses is not None:  # its followers end (each caller is told so)
            await self.responses.stop()
        if self.background is not None:
            await self.background.stop()
        if self._keys_task is not None:
            self._keys_task.cancel()
        await self._close_jwt()
        if self._micro is not None:
            await settle(self._micro.stop(), STOP_STEP_S)
        await self._drain_requests(drain_timeout)
        await self._stop_admission()
        if self._heartbeats is not None:
            await self._heartbeats.stop()
        if self._l2 is not None:
            await settle(self._l2.aclose(), STOP_STEP_S)
        if self._semantic is not None:
            await settle(self._semantic.aclose(), STOP_STEP_S)
        if self._redis is not None:
            await settle(self._redis.aclose(), STOP_STEP_S)
        connection = self.nc
        if self._lifeline is not None:
            self._lifeline.leaving = True
        await settle(self._fs.stop(), STOP_STEP_S)  # FastStream drains; a dead server fails it
        await close_quietly(connection)


def _security(servers: ServerList, tls: ssl.SSLContext | None) -> BaseSecurity | None:
    """FastStream's form of the list's credentials (they apply to every server of it)."""
    if servers.user is not None:
        return NatsUserPassword(servers.user, servers.password or "", ssl_context=tls)
    if servers.token is not None:
        return NatsToken(servers.token, ssl_context=tls)
    return BaseSecurity(ssl_context=tls) if tls else None


async def serve_broker(
    config: Config, options: BrokerOptions, stop: asyncio.Event, health: Health | None = None
) -> None:
    """Run a broker until ``stop`` is set (``health``: what its probes answer).

    Raises:
        ConnectionLost: the server closed the connection for good (the broker stopped).
    """
    lifeline = Lifeline(stop)
    service = BrokerService(config, options, lifeline)
    await serve(
        service,
        stop,
        ready=lambda: f"broker ready: {len(config.models)} models, L2={service.l2_name}",
        log=log,
        lifeline=lifeline,
        health=health,
        probe=lambda: ("broker", service.nc, lambda: service.subscriptions),
    )


#: Bound on each JetStream call the audit trail's writer makes (it retries after a failure).
AUDIT_TIMEOUT_S = 2.0
#: How long a stopping broker waits for its audit records to be written (JetStream may be away).
AUDIT_STOP_S = 1.0
#: How often run-time API keys are re-read from Redis (revocation takes effect within this).
KEY_REFRESH_S = 5.0


async def _refresh_keys(client: redis.Redis, keys: KeyRing) -> None:
    """Keep the key ring's run-time keys in step with Redis."""
    while True:
        await asyncio.sleep(KEY_REFRESH_S)
        try:
            await _load_keys(client, keys)
        except Exception:  # Redis down: keep the last snapshot
            log.warning("could not refresh API keys from Redis; keeping the last snapshot")


async def _load_keys(client: redis.Redis, keys: KeyRing) -> None:
    snapshot = await client.hgetall(REDIS_KEYS)
    keys.load_snapshot({_text(k): _text(v) for k, v in snapshot.items()})


async def _nothing() -> None:
    return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Assembly:
    """The pipelines and the collaborators the service also drives: the router (breaker
    commands, the console), admission (shared limits, statistics), the forwarder (probes)."""

    pipeline: ChatPipeline
    embeddings: EmbeddingsPipeline
    router: Router
    admission: Admission
    forwarder: Forwarder
    new_id: Callable[[], str]
    meter: Meter


def assemble_pipeline(
    nc: Client,
    config: Config,
    cache: ResponseCache | None,
    *,
    keys: KeyRing,
    limiter: RateLimiter,
    ledger: SpendLedger,
    status: BrokerStatus | None = None,
    heartbeats: Heartbeats | None = None,
) -> Assembly:
    """Build the pipelines' collaborators at the edge and inject them. Chat and embeddings
    share the keys, the meter, the request record, the breakers, the retry budget and
    admission (the broker's slots, the deployments' limits)."""
    clock = asyncio.get_running_loop().time
    nuid = NUID()
    router = Router(config.breaker, clock=clock)
    settings = cache.settings if cache is not None else None
    max_body = min(config.broker.max_request_bytes, nc.max_payload - headers.HEADER_ROOM)

    def new_id() -> str:
        return nuid.next().decode()

    preparer = RequestPreparer(config, settings, max_body, clock, new_id, keys=keys)
    deployments = {d.name: d for m in config.models.values() for d in m.deployments}
    admission = Admission(
        config.admission,
        deployments.values(),
        max_in_flight=config.broker.max_in_flight,
        clock=clock,
        label=lambda t: t.name if t.name in config.tenants or t is ANONYMOUS else "other",
        shared=True,
    )
    forwarder = Forwarder(nc, clock, on_reply=admission.learn)
    resilient = Resilient(config, router, clock, admission=admission)
    meter = Meter(deployments, limiter, ledger, tenant_metrics=config.broker.tenant_metrics)
    record = RequestRecord(config.broker, status)
    pipeline = ChatPipeline(
        preparer=preparer,
        front=ReadThrough(cache, clock),
        upstream=Upstream(resilient, forwarder, Fallbacks(config.models)),
        meter=meter,
        record=record,
        admission=admission,
        clock=clock,
        heartbeats=heartbeats,
    )
    embeddings = EmbeddingsPipeline(
        preparer=EmbeddingPreparer(config, settings, max_body, clock, new_id, keys=keys),
        vectors=cache.vectors if cache is not None else None,
        upstream=Upstream(resilient, forwarder.to(subjects.provider_embeddings_subject)),
        meter=meter,
        record=record,
        admission=admission,
        clock=clock,
        heartbeats=heartbeats,
    )
    return Assembly(pipeline, embeddings, router, admission, forwarder, new_id, meter)


def _offload_spend(ledger: SpendLedger, keys: KeyRing | None, tenant_metrics: bool) -> Spend:
    """How a line run on a provider's own Batch API is charged: its tenant's spend (in the
    tenant's budget period) and the cost metric, as the meter charges the normal path."""

    async def spend(tenant: str, model: str, provider: str, cost: float) -> None:
        period = keys.named(tenant).budget_period if keys is not None else "month"
        metrics.COST.labels(provider, model, "batch", tenant if tenant_metrics else "").inc(cost)
        await ledger.add(tenant, period, cost, model)

    return spend
