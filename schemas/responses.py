"""The OpenAI Responses API (``POST /v1/responses``, ``llm.responses``): the request as the
broker validates it, the response object and its usage, and the record a stored response
keeps. No I/O here.

A request is validated for the fields the broker reads (model, input, stream, sampling, the
output cap, tools) and otherwise kept open: it travels to the worker as its caller wrote it.
A request that continues a stored conversation (``previous_response_id``) reaches the worker
with :data:`HISTORY_FIELD` added by the broker: the earlier turns' items (which a translating
worker puts before the input) and the upstream's own id of the previous response (which a
passthrough worker sends instead, when it is the upstream that served it). A caller's own
value of that field is dropped.

A background response whose upstream runs background responses itself (OpenAI's) runs there:
the broker keeps the upstream's id of it and asks that provider's workers to read it
(:class:`UpstreamResponseCall` on ``llm.provider.<provider>.responses``) until it is final.
"""

from __future__ import annotations

import enum
import time
from typing import Annotated, Any

import msgspec
from nats.nuid import NUID

from schemas.chat import MAX_OUTPUT_TOKENS, JSONObject, Temperature, TopP, Usage
from schemas.codec import decode_json
from schemas.usage import CACHE_WRITE_1H_TOKENS, CACHE_WRITE_TOKENS, CACHED_TOKENS

__all__ = [
    "HISTORY_FIELD",
    "History",
    "ResponseStatus",
    "ResponsesRequest",
    "StoredResponse",
    "UpstreamOp",
    "UpstreamResponseCall",
    "decode_responses_request",
    "input_items",
    "listed_item",
    "new_id",
    "replayed_input",
    "response_object",
    "response_usage",
    "usage_of_chat",
]

#: The field the broker adds to a request that continues a conversation (see the module doc).
HISTORY_FIELD = "llm_edge_history"

OutputCap = Annotated[int, msgspec.Meta(ge=1, le=MAX_OUTPUT_TOKENS)]


class ResponsesRequest(msgspec.Struct, omit_defaults=True):
    """A Responses request, as far as the broker reads it (other fields are kept in the body)."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    input: str | list[JSONObject] | None = None
    instructions: str | None = None
    stream: bool | None = None
    background: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_output_tokens: OutputCap | None = None
    tools: list[JSONObject] | None = None
    tool_choice: str | JSONObject | None = None
    text: JSONObject | None = None
    metadata: dict[str, str] | None = None

    @property
    def max_tokens(self) -> int | None:
        """The output cap (what admission and cost estimates read of every API)."""
        return self.max_output_tokens


_decoder = msgspec.json.Decoder(ResponsesRequest)


def decode_responses_request(body: bytes) -> ResponsesRequest:
    """Decode and validate a Responses body.

    Raises:
        msgspec.DecodeError: not JSON.
        msgspec.ValidationError: a field the broker reads is malformed.
    """
    return decode_json(_decoder, body)


class History(msgspec.Struct, omit_defaults=True):
    """What the broker adds to a request continuing a conversation (:data:`HISTORY_FIELD`).

    Attributes:
        items: every earlier turn's input and output items, oldest first.
        upstream_id: the upstream's own id of the previous response (a passthrough sends it
            as ``previous_response_id``); empty when the upstream did not give one.
        provider: the provider that served the previous response (empty: not recorded); a
            passthrough to another provider sends :attr:`items` as input instead, since
            that upstream does not know :attr:`upstream_id`.
    """

    items: list[JSONObject] = []
    upstream_id: str = ""
    provider: str = ""


class ResponseStatus:
    """A response's ``status`` values."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Statuses a response never leaves.
    FINAL = frozenset({COMPLETED, INCOMPLETE, FAILED, CANCELLED})


class StoredResponse(msgspec.Struct, omit_defaults=True):
    """A stored response (``store``) and what its conversation needs.

    Attributes:
        tenant: who owns it (no other tenant sees it).
        response: the response object as its caller got it (JSON bytes).
        input_items: this turn's input items, each with an ``id`` (JSON objects).
        history: the earlier turns' items (input and output), oldest first.
        upstream_id: the upstream's own id of it (when it differs from ``response.id``).
        provider: the provider that served it (a background one running at its provider:
            the provider whose workers read it, by :attr:`upstream_id`).
        body: a background request's body, kept until it has run.
        headers: the background request's headers the broker needs to run it.
        streamed: a background response created with ``stream: true`` (its events are kept,
            ``schemas.jetstream.RESPONSE_EVENTS_STREAM``).
        deployment: the deployment that took a background response running at its upstream
            (its answer is priced at that deployment's prices when it is final).
        model: the model that deployment served it as (the cost and token metrics' label).
        charged: what the tenant was charged for it when it was final (``Llm-Cost-Usd`` for
            a priced deployment, ``Llm-Service-Tier``): set with the final status, in the
            same compare-and-set, by the one run that charged it.
        counted: the tokens (its estimate) counted against its tenant's rate limits when a
            background response was accepted; its run is then not counted again, and its
            tenant's tpm is trued up to the usage when it is charged (``None``: not counted
            when accepted: its run is counted as it is admitted).
        key: the counters' name (``<tenant>/<grant id>``) of the key that created a
            background response, when that key has a tpm or a budget of its own: it is
            charged to them as well as to its tenant's (empty: none).
        key_tpm: the key has a tpm of its own (trued up to the usage with its tenant's).
        key_budget_period: the period of the key's own budget (empty: it has none).
    """

    tenant: str
    response: bytes
    input_items: list[JSONObject] = []
    history: list[JSONObject] = []
    upstream_id: str = ""
    provider: str = ""
    body: bytes = b""
    headers: dict[str, str] = {}
    streamed: bool = False
    deployment: str = ""
    model: str = ""
    charged: dict[str, str] = {}
    counted: int | None = None
    key: str = ""
    key_tpm: bool = False
    key_budget_period: str = ""


class UpstreamOp(enum.StrEnum):
    """What a call on ``llm.provider.<provider>.responses`` asks for."""

    GET = "get"
    CANCEL = "cancel"


class UpstreamResponseCall(msgspec.Struct):
    """One call on ``llm.provider.<provider>.responses``: read or cancel a background
    response the upstream runs. The reply is the upstream's ``response`` object, or an error
    envelope (its status in ``Llm-Status``).

    Attributes:
        op: read it, or cancel it.
        id: the upstream's own id of the response.
    """

    op: UpstreamOp
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


_nuid = NUID()


def new_id(prefix: str) -> str:
    """A new object id: ``resp_...``, ``msg_...``, ``fc_...``."""
    return f"{prefix}_{_nuid.next().decode()}"


def input_items(value: str | list[JSONObject] | None) -> list[JSONObject]:
    """A request's ``input`` as items, each with an ``id`` (a string is one user message)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    items = []
    for given in value:
        item = dict(given)
        if "type" not in item and "role" in item:
            item["type"] = "message"
        if item.get("type") == "message":
            item["content"] = _message_content(item)
        item.setdefault("id", new_id("msg" if item.get("type") == "message" else "item"))
        items.append(item)
    return items


def _message_content(item: JSONObject) -> Any:
    """A message item's content as parts (a string is one text part); an assistant's text
    parts carry ``annotations``, as output text does."""
    content = item.get("content")
    assistant = item.get("role") == "assistant"
    if isinstance(content, str):
        content = [{"type": "output_text" if assistant else "input_text", "text": content}]
    if not isinstance(content, list):
        return content
    return [
        {**part, "annotations": part.get("annotations") or []}
        if isinstance(part, dict) and part.get("type") == "output_text"
        else part
        for part in content
    ]


#: Item types whose listed form carries a ``status`` (OpenAI's input item list shows them
#: ``completed``; the SDK's models require it of assistant messages and tool outputs).
_WITH_STATUS = frozenset({"message", "function_call", "function_call_output"})


def listed_item(item: JSONObject) -> JSONObject:
    """A stored input item as the input item list shows it (with its ``status``; an item
    sent on to an upstream goes without one, as its caller wrote it)."""
    if item.get("type") in _WITH_STATUS and "status" not in item:
        return {**item, "status": ResponseStatus.COMPLETED}
    return item


def replayed_input(
    history: list[JSONObject], given: str | list[JSONObject] | None
) -> list[JSONObject]:
    """A conversation's earlier turns and this turn's input as one input list, for an upstream
    that did not serve the earlier turns.

    Item ids are left out (they name items that upstream never stored), and so are reasoning
    items (they are only valid on the upstream that produced them, with their ids).
    """
    items: list[JSONObject] = []
    for item in [*history, *input_items(given)]:
        if item.get("type") == "reasoning":
            continue
        items.append({name: value for name, value in item.items() if name != "id"})
    return items


def usage_of_chat(usage: Usage | None) -> JSONObject | None:
    """A chat completion's usage in the Responses API's shape. Cache writes (which OpenAI
    does not report, but Anthropic and Bedrock bill apart) stay in ``input_tokens_details``
    under the names the chat usage gives them (:mod:`schemas.usage`), so the meter prices
    them as writes rather than as plain input."""
    if usage is None:
        return None
    prompt_details = usage.prompt_tokens_details or {}
    completion_details = usage.completion_tokens_details or {}
    # OpenAI's current SDK requires ``cache_write_tokens`` (0 when nothing was written).
    input_details: JSONObject = {
        CACHED_TOKENS: int(prompt_details.get(CACHED_TOKENS) or 0),
        CACHE_WRITE_TOKENS: int(prompt_details.get(CACHE_WRITE_TOKENS) or 0),
    }
    if prompt_details.get(CACHE_WRITE_1H_TOKENS):
        input_details[CACHE_WRITE_1H_TOKENS] = int(prompt_details[CACHE_WRITE_1H_TOKENS])
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": input_details,
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {
            "reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0)
        },
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
    }


#: Request fields a response object repeats, with the value it shows when the request had none.
_ECHOED: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": None,
    "store": True,
    "background": False,
    "temperature": None,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": None,
    "truncation": "disabled",
    "user": None,
}


def response_usage(body: JSONObject) -> JSONObject | None:
    """The usage of a response object, if it has one."""
    usage = body.get("usage")
    return usage if isinstance(usage, dict) else None


def response_object(
    request: JSONObject,
    *,
    response_id: str,
    model: str,
    status: str,
    output: list[JSONObject],
    usage: JSONObject | None = None,
    created_at: float | None = None,
    incomplete: str | None = None,
    error: JSONObject | None = None,
) -> JSONObject:
    """A ``response`` object for ``request`` (its top-level fields, decoded)."""
    body: JSONObject = {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at if created_at is not None else time.time()),
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": model,
        "output": output,
    }
    for name, default in _ECHOED.items():
        value = request.get(name)
        body[name] = default if value is None else value
    body.pop(HISTORY_FIELD, None)
    body["usage"] = usage
    return body
