"""The broker's NATS subjects: each callback picks the sink and the tenant, the pipeline answers.

| subject                                   | callback              | answers in          |
|-------------------------------------------|-----------------------|---------------------|
| ``llm.chat``                              | :meth:`on_chat`       | OpenAI shapes       |
| ``llm.tenant.<tenant>.chat``              | :meth:`on_tenant_chat` | OpenAI shapes      |
| ``llm.messages``, ``llm.tenant.*.messages`` | :meth:`on_messages` | Anthropic shapes    |
| ``llm.messages.count_tokens`` (and tenant) | :meth:`on_count_tokens` | Anthropic shapes |
| ``llm.embeddings``, ``llm.tenant.*.embeddings`` | :meth:`on_embeddings` | OpenAI embeddings |
| ``llm.models``                            | :meth:`on_models`     | the model list      |
| ``llm.cancel``                            | :meth:`on_cancel`     | (cancels a request) |

The Responses API's subjects are answered by its own wing (:mod:`broker.responses.api`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker.config import Config
from broker.control import model_list
from broker.embeddings.pipeline import EmbeddingsPipeline
from broker.errors import BrokerError, Unauthorized
from broker.pipeline import ChatPipeline
from broker.replies.sinks import AnthropicSink, NatsSink, ReplySink
from broker.tenancy.tenants import Caller, KeyRing, KeysNeeded
from schemas import headers, subjects
from schemas.api import Api

__all__ = ["Endpoints"]

Callback = Callable[[Msg], Awaitable[None]]
_encoder = msgspec.json.Encoder()


class Endpoints:
    """Subscription callbacks for the request subjects.

    Args:
        nc: the connection replies go out on.
        pipeline: answers requests.
        keys: API keys (``llm.models`` needs one when keys are required).
        config: models and the tenant-subject switch.
        clock: the event loop's clock (when the last interactive request came).
        embeddings: answers embeddings requests.
    """

    def __init__(
        self,
        nc: Client,
        pipeline: ChatPipeline,
        keys: KeyRing,
        config: Config,
        clock: Callable[[], float],
        *,
        embeddings: EmbeddingsPipeline,
    ) -> None:
        self._nc = nc
        self._pipeline = pipeline
        self._embeddings = embeddings
        self._keys = keys
        self._tenant_subjects = config.nats_tenant_subjects
        self._tenants = {name: Caller(t, None, t.admin) for name, t in config.tenants.items()}
        self._config = config
        self._models = _encoder.encode(model_list(config))
        self._clock = clock
        #: When the last interactive request arrived (the batch runner yields to them).
        self.last_interactive = 0.0
        #: messages waiting for a JWT issuer's keys (held so they are not collected)
        self._identifying: set[asyncio.Task[None]] = set()

    def queue_subjects(self) -> dict[str, Callback]:
        """The request subjects the brokers' queue group shares, with their callbacks."""
        return {
            subjects.CHAT: self.on_chat,
            subjects.MESSAGES: self.on_messages,
            subjects.TENANT_CHAT: self.on_tenant_chat,
            subjects.TENANT_MESSAGES: self.on_messages,
            subjects.COUNT_TOKENS: self.on_count_tokens,
            subjects.TENANT_COUNT_TOKENS: self.on_count_tokens,
            subjects.EMBEDDINGS: self.on_embeddings,
            subjects.TENANT_EMBEDDINGS: self.on_embeddings,
            subjects.MODELS: self.on_models,
        }

    async def on_chat(self, msg: Msg) -> None:
        """``llm.chat``: OpenAI chat-completions; the API key names the tenant."""
        self.last_interactive = self._clock()
        if msg.reply:
            sink = NatsSink(self._nc, msg.reply)
            await self._pipeline.handle(msg.data, msg.headers or {}, sink, reply_to=msg.reply)

    async def on_tenant_chat(self, msg: Msg) -> None:
        """``llm.tenant.<tenant>.chat``: the subject names the tenant (NATS permissions)."""
        self.last_interactive = self._clock()
        if not msg.reply:
            return
        hdrs = msg.headers or {}
        sink = NatsSink(self._nc, msg.reply)
        try:
            caller = self.subject_caller(msg.subject)
        except BrokerError as exc:
            await self._pipeline.refuse(exc, hdrs, sink)
            return
        await self._pipeline.handle(msg.data, hdrs, sink, caller, reply_to=msg.reply)

    async def on_messages(self, msg: Msg) -> None:
        """``llm.messages`` (and ``llm.tenant.<tenant>.messages``): the Anthropic Messages API.

        The body goes through the pipeline as its caller wrote it: a worker of an Anthropic
        deployment sends it upstream unchanged, another translates it (``workers.messages``).
        """
        await self._anthropic(msg, Api.MESSAGES)

    async def on_count_tokens(self, msg: Msg) -> None:
        """``llm.messages.count_tokens`` (and its tenant subject): Anthropic's token count,
        counted by an Anthropic deployment or estimated by the worker of another."""
        await self._anthropic(msg, Api.COUNT_TOKENS)

    async def _anthropic(self, msg: Msg, api: Api) -> None:
        """As on ``llm.chat``: the caller is authenticated first, then the body is checked; a
        refusal goes through the pipeline's refusal path (counted, ``X-Cache: BYPASS``)."""
        self.last_interactive = self._clock()
        if not msg.reply:
            return
        hdrs = msg.headers or {}
        sink = AnthropicSink(self._nc, msg.reply)
        caller = None
        if subjects.tenant_of(msg.subject):
            try:
                caller = self.subject_caller(msg.subject)
            except BrokerError as exc:
                await self._pipeline.refuse(exc, hdrs, sink)
                return
        await self._pipeline.handle(msg.data, hdrs, sink, caller, reply_to=msg.reply, api=api)

    async def on_embeddings(self, msg: Msg) -> None:
        """``llm.embeddings`` (and ``llm.tenant.<tenant>.embeddings``): OpenAI embeddings; the
        API key (or the subject) names the caller, as on ``llm.chat``."""
        self.last_interactive = self._clock()
        if not msg.reply:
            return
        hdrs = msg.headers or {}
        sink = NatsSink(self._nc, msg.reply)
        caller = None
        if subjects.tenant_of(msg.subject):
            try:
                caller = self.subject_caller(msg.subject)
            except BrokerError as exc:
                await self._embeddings.refuse(exc, hdrs, sink)
                return
        await self._embeddings.handle(msg.data, hdrs, sink, caller, reply_to=msg.reply)

    async def on_models(self, msg: Msg, caller: Caller | None = None) -> None:
        """``llm.models``: the model list, for callers with a key when keys are required
        (a caller with a model list sees only the models it may use)."""
        if not msg.reply:
            return
        hdrs = msg.headers or {}
        try:
            if caller is None:
                caller = self._keys.identify(hdrs.get(headers.AUTHORIZATION))
        except KeysNeeded:
            self._after_keys(msg, self.on_models, NatsSink(self._nc, msg.reply))
            return
        except BrokerError as exc:  # 401, or 503 while the keys cannot be read
            await self._pipeline.refuse(exc, hdrs, NatsSink(self._nc, msg.reply))
            return
        body = self._models
        if caller.grant is not None or caller.tenant.models:
            listed = model_list(self._config)
            listed["data"] = [m for m in listed["data"] if self._may_use(caller, m["id"])]
            body = _encoder.encode(listed)
        await self._nc.publish(msg.reply, body, headers={headers.STATUS: "200"})

    async def on_cancel(self, msg: Msg) -> None:
        """``llm.cancel``: the body is a request id, the cancel's reply subject the request's
        own (so only its caller can stop it)."""
        request_id = msg.data.decode(errors="replace")
        self._pipeline.cancel(request_id, msg.reply)
        self._embeddings.cancel(request_id, msg.reply)

    def _after_keys(
        self, msg: Msg, handler: Callable[[Msg, Caller], Awaitable[None]], sink: ReplySink
    ) -> None:
        """Fetch the JWT issuer's keys a token needs in a task of its own (the callback never
        waits on the network), then serve the message as its caller."""

        async def identified() -> None:
            hdrs = msg.headers or {}
            try:
                caller = await self._keys.identify_fetching(hdrs.get(headers.AUTHORIZATION))
            except BrokerError as exc:
                await self._pipeline.refuse(exc, hdrs, sink)
                return
            await handler(msg, caller)

        task = asyncio.ensure_future(identified())
        self._identifying.add(task)
        task.add_done_callback(self._identifying.discard)

    def _may_use(self, caller: Caller, name: str) -> bool:
        model = self._config.resolve(name)
        names = (model.name, *model.aliases) if model is not None else (name,)
        try:
            caller.check_model(name, names)
        except BrokerError:
            return False
        return True

    def subject_caller(self, subject: str) -> Caller:
        """The configured tenant a tenant-bound subject names, or 401."""
        if not self._tenant_subjects:
            raise Unauthorized(
                "Tenant subjects are off: set auth.nats_tenant_subjects = true (and restrict "
                "who may publish to them in the NATS server's permissions)."
            )
        caller = self._tenants.get(subjects.tenant_of(subject))
        if caller is None:
            raise Unauthorized(f"No tenant is configured for subject {subject!r}.")
        return caller
