"""Fallback to another model: when a request is too long for its model, or refused for its
content.

Two decisions, each a :class:`Route` (the model to walk, why, and which deployments fit):

* **Before the call** (:meth:`Fallbacks.route`): a request whose prompt and requested answer
  length (:mod:`broker.upstream.window`) fit no deployment of its model goes to the model's
  ``context_fallback`` (and on down that model's ``context_fallback`` while it does not fit
  either). Deployments too small for it are left out of the walk. Without a fallback that
  takes it, a request that is *surely* too long (its lower estimate is over every window, or
  its ``max_tokens`` over every ``max_output_tokens``) is refused with a 400
  ``context_length_exceeded``, and one that only may be too long goes to its model, whose
  upstream decides. It is never cut short.
* **After the call** (:meth:`Fallbacks.after_failure`, :meth:`Fallbacks.after_answer`), at
  most once per request: an upstream that answers ``context_length_exceeded`` sends the
  request to ``context_fallback``; one that refuses it for content (the error
  ``content_policy_violation``, or a 200 whose answer finished for ``content_filter``,
  Messages API ``stop_reason: refusal``, a Responses API response with a ``refusal`` part or
  ``incomplete`` for ``content_filter``) sends it to ``content_policy_fallback``. Without
  that model configured, the error or the refusal reaches the caller as the upstream gave it.

How each provider's refusals arrive (the worker maps them: :mod:`workers.errors`):

* OpenAI: 400 ``context_length_exceeded``; 400 ``content_policy_violation``.
* Azure OpenAI: as OpenAI; a filtered prompt is a 400 ``content_filter``, a filtered answer a
  200 finished for ``content_filter``.
* Anthropic: 400 "prompt is too long"; a 200 with ``stop_reason: refusal``.
* Gemini: 400 "input token count ... exceeds"; a 200 with ``finishReason: SAFETY`` (and the
  like) or ``promptFeedback.blockReason``, translated to ``content_filter``.
* Bedrock: 400 "Input is too long"; a 200 with ``stopReason: guardrail_intervened`` or
  ``content_filtered``, translated to ``content_filter``.

Chat, Messages and Responses requests are routed so. Streams decide before their first byte:
the context window before the call, an error before the first event after it. A refusal
inside a stream that has begun is relayed as it came.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from broker.errors import BrokerError, ContextLengthExceeded, UpstreamFailed
from broker.request import Call, Prepared, Reply
from broker.upstream.deployments import Deployment, ModelConfig
from broker.upstream.window import Need, need_of
from schemas.api import Api

__all__ = ["Fallbacks", "Reason", "Route", "refused"]

log = logging.getLogger("llm_edge.broker")

#: The worker's codes (``Llm-Error-Code``) of the refusals a fallback may answer.
CONTEXT_LENGTH_CODE = "context_length_exceeded"
CONTENT_POLICY_CODE = "content_policy_violation"


class Reason(enum.StrEnum):
    """Why another model answered (``Llm-Fallback``)."""

    CONTEXT_WINDOW = "context_window"
    CONTENT_POLICY = "content_policy"


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: ``model``'s deployments (then its ``fallbacks``).

    Attributes:
        reason: why it is not the request's own model (``None``: it is).
        need: what the request needs of a window; only the deployments it fits are walked
            (``None``: every deployment).
    """

    model: ModelConfig
    reason: Reason | None = None
    need: Need | None = None

    def fits(self, deployment: Deployment) -> bool:
        """Whether ``deployment`` can take the request."""
        need = self.need
        return need is None or deployment.takes(need.prompt, need.max_tokens)


class _Choice(msgspec.Struct):
    finish_reason: str | None = None


class _Finished(msgspec.Struct):
    choices: list[_Choice] = []
    stop_reason: str | None = None


_finished = msgspec.json.Decoder(_Finished)


class _Part(msgspec.Struct):
    type: str = ""


class _Item(msgspec.Struct):
    type: str = ""
    content: list[_Part] | str | None = None


class _Incomplete(msgspec.Struct):
    reason: str | None = None


class _Response(msgspec.Struct):
    status: str | None = None
    incomplete_details: _Incomplete | None = None
    output: list[_Item] = []


_response = msgspec.json.Decoder(_Response)
#: What a refusal of each API holds, one of (a byte search first: most answers hold none,
#: and are never decoded here).
_MARKS = {
    Api.CHAT: (b'"content_filter"',),
    Api.MESSAGES: (b'"refusal"',),
    Api.RESPONSES: (b'"refusal"', b'"content_filter"'),
}


def refused(body: bytes, api: Api) -> bool:
    """Whether a 200 answer is a refusal for content: a chat completion finished for
    ``content_filter``, a Messages answer stopped for ``refusal``, a Responses object with a
    ``refusal`` part or ``incomplete`` for ``content_filter``."""
    if not any(mark in body for mark in _MARKS.get(api, ())):
        return False
    try:
        if api is Api.RESPONSES:
            return _refused_response(_response.decode(body))
        answer = _finished.decode(body)
    except msgspec.MsgspecError:
        return False
    if api is Api.MESSAGES:
        return answer.stop_reason == "refusal"
    return any(choice.finish_reason == "content_filter" for choice in answer.choices)


def _refused_response(response: _Response) -> bool:
    details = response.incomplete_details
    if response.status == "incomplete" and details and details.reason == "content_filter":
        return True
    return any(
        isinstance(item.content, list) and any(part.type == "refusal" for part in item.content)
        for item in response.output
        if item.type == "message"
    )


class Fallbacks:
    """Decides which model a request goes to, before and after its call.

    Args:
        models: every configured model, by name.
    """

    def __init__(self, models: Mapping[str, ModelConfig]) -> None:
        self._models = models

    def route(self, call: Call) -> Route:
        """The model a request goes to, and which of its deployments fit it.

        Raises:
            ContextLengthExceeded: it is surely too long for every model it may go to.
        """
        model = call.model
        if not isinstance(call, Prepared) or call.api not in _GENERATING or not model.windowed:
            return Route(model)  # (no window declared: nothing to count)
        need = need_of(call)
        chain = self._context_chain(model)
        for candidate in chain:
            if any(d.takes(need.prompt, need.max_tokens) for d in candidate.deployments):
                reason = None if candidate is model else Reason.CONTEXT_WINDOW
                return Route(candidate, reason, need)
        deployments = [d for candidate in chain for d in candidate.deployments]
        if not any(d.takes(need.sure, need.max_tokens) for d in deployments):
            raise _too_long(model, chain, need, call.api)
        last = chain[-1]  # it may fit: the largest configured model's upstream decides
        return Route(last, None if last is model else Reason.CONTEXT_WINDOW)

    def after_failure(self, call: Call, route: Route, failure: BrokerError) -> Route | None:
        """Where to send a request again after its call failed (``None``: nowhere)."""
        if not isinstance(failure, UpstreamFailed):
            return None
        if failure.code == CONTEXT_LENGTH_CODE:
            return self._again(call, route, route.model.context_fallback, Reason.CONTEXT_WINDOW)
        if failure.code == CONTENT_POLICY_CODE:
            fallback = route.model.content_policy_fallback
            return self._again(call, route, fallback, Reason.CONTENT_POLICY)
        return None

    def after_answer(self, call: Call, route: Route, reply: Reply) -> Route | None:
        """Where to send a request again after a 200 that refuses it (``None``: nowhere)."""
        fallback = route.model.content_policy_fallback
        if fallback is None or reply.status != 200 or not refused(reply.body, call.api):
            return None
        return self._again(call, route, fallback, Reason.CONTENT_POLICY)

    def _again(
        self, call: Call, route: Route, fallback: str | None, reason: Reason
    ) -> Route | None:
        model = self._models.get(fallback) if fallback is not None else None
        if model is None or model is route.model:
            return None
        log.info(
            "request %s: %s refused it (%s), sent to %s",
            call.request_id,
            route.model.name,
            reason.value,
            model.name,
        )
        return Route(model, reason)

    def _context_chain(self, model: ModelConfig) -> list[ModelConfig]:
        """``model``, then its ``context_fallback``, that one's ... (each once)."""
        chain = [model]
        name = model.context_fallback
        while name is not None and (nxt := self._models.get(name)) is not None:
            if nxt in chain:
                break
            chain.append(nxt)
            name = nxt.context_fallback
        return chain


_GENERATING = frozenset({Api.CHAT, Api.MESSAGES, Api.RESPONSES})


#: The request fields a too-long request is told to shorten: its prompt and its answer cap.
_FIELDS = {
    Api.CHAT: ("messages", "max_tokens"),
    Api.MESSAGES: ("messages", "max_tokens"),
    Api.RESPONSES: ("input", "max_output_tokens"),
}


def _too_long(
    model: ModelConfig, chain: list[ModelConfig], need: Need, api: Api
) -> ContextLengthExceeded:
    prompt, cap = _FIELDS.get(api, _FIELDS[Api.CHAT])
    windows = [0, *(d.context_window for m in chain for d in m.deployments if d.context_window)]
    outputs = [d.max_output_tokens for m in chain for d in m.deployments if d.max_output_tokens]
    if outputs and need.max_tokens > max(outputs):
        message = (
            f"{cap} is {need.max_tokens}, but `{model.name}` writes at most {max(outputs)} tokens"
        )
        return ContextLengthExceeded(message, param=cap)
    message = (
        f"`{model.name}`'s maximum context length is {max(windows)} tokens; this request needs "
        f"at least {need.sure} for its {prompt}"
        + (f" and {need.max_tokens} for its answer" if need.max_tokens else "")
        + f". Shorten the {prompt}"
        + (f" or {cap}" if need.max_tokens else "")
        + ", or configure a context_fallback model"
    )
    return ContextLengthExceeded(message, param=prompt)
