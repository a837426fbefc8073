"""The broker's NATS subjects: each callback picks the sink and the tenant, the pipeline answers.

| subject                                   | callback              | answers in          |
|-------------------------------------------|-----------------------|---------------------|
| ``llm.chat``                              | :meth:`on_chat`       | OpenAI shapes       |
| ``llm.tenant.<tenant>.chat``              | :meth:`on_tenant_chat` | OpenAI shapes      |
| ``llm.messages``, ``llm.tenant.*.messages`` | :meth:`on_messages` | Anthropic shapes    |
| ``llm.models``                            | :meth:`on_models`     | the model list      |
| ``llm.cancel``                            | :meth:`on_cancel`     | (cancels a request) |
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker.anthropic import to_openai_request
from broker.config import Config
from broker.control import model_list
from broker.errors import BrokerError, RequestTooLarge, Unauthorized, from_decode_error
from broker.pipeline import ChatPipeline
from broker.replies.sinks import AnthropicSink, NatsSink, ReplySink
from broker.tenancy.tenants import Caller, KeyRing, KeysNeeded
from schemas import headers, subjects

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
    """

    def __init__(
        self,
        nc: Client,
        pipeline: ChatPipeline,
        keys: KeyRing,
        config: Config,
        clock: Callable[[], float],
    ) -> None:
        self._nc = nc
        self._pipeline = pipeline
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
            caller = self._subject_caller(msg.subject)
        except BrokerError as exc:
            await self._pipeline.refuse(exc, hdrs, sink)
            return
        await self._pipeline.handle(msg.data, hdrs, sink, caller, reply_to=msg.reply)

    async def on_messages(self, msg: Msg, caller: Caller | None = None) -> None:
        """``llm.messages`` (and ``llm.tenant.<tenant>.messages``): the Anthropic Messages API.

        As on ``llm.chat``: the caller is authenticated first (``caller``: already, after a
        key fetch), then the body is checked; a refusal goes through the pipeline's refusal
        path (counted, ``X-Cache: BYPASS``).
        """
        self.last_interactive = self._clock()
        if not msg.reply:
            return
        hdrs = msg.headers or {}
        max_body = self._pipeline.max_body
        try:
            if caller is None and msg.subject == subjects.MESSAGES:
                caller = self._keys.identify(hdrs.get(headers.AUTHORIZATION))
            elif caller is None:
                caller = self._subject_caller(msg.subject)
            if len(msg.data) > max_body:
                raise RequestTooLarge(
                    f"request body is {len(msg.data)} bytes; the limit is {max_body}"
                )
            try:
                body, model = to_openai_request(msg.data)
            except msgspec.MsgspecError as exc:
                raise from_decode_error(exc) from None
        except KeysNeeded:
            self._after_keys(msg, self.on_messages, AnthropicSink(self._nc, msg.reply, ""))
            return
        except BrokerError as exc:
            await self._pipeline.refuse(exc, hdrs, AnthropicSink(self._nc, msg.reply, ""))
            return
        sink = AnthropicSink(self._nc, msg.reply, model)
        await self._pipeline.handle(body, hdrs, sink, caller, reply_to=msg.reply)

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
        self._pipeline.cancel(msg.data.decode(errors="replace"), msg.reply)

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

    def _subject_caller(self, subject: str) -> Caller:
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
