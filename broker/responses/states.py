"""How a stored background response moves between statuses: ``queued``, ``in_progress``
(run here, or at its upstream), then final (``completed``, ``incomplete``, ``failed``,
``cancelled``), never to leave it.

Each change is a pure function for :meth:`~broker.responses.store.ResponseStore.update`
(compare-and-set): it returns the entry changed, or ``None`` to leave it as it is, so a
cancel and a finishing run never overwrite each other.
"""

from __future__ import annotations

from typing import Any

import msgspec

from broker.request import Reply
from schemas import ErrorEnvelope, headers
from schemas.responses import ResponseStatus, StoredResponse

__all__ = ["at_upstream", "cancelled", "finished", "retryable", "started", "status"]

_encoder = msgspec.json.Encoder()
_any = msgspec.json.Decoder(dict[str, Any])
_envelope = msgspec.json.Decoder(ErrorEnvelope)


def status(stored: StoredResponse) -> str:
    """The response's ``status``."""
    return str(_any.decode(stored.response).get("status"))


def retryable(reply_status: int) -> bool:
    """Whether a run that failed so may succeed when run again."""
    return reply_status >= 500 or reply_status == 429


def started(stored: StoredResponse) -> StoredResponse | None:
    """``queued`` becomes ``in_progress`` (another status is left as it is)."""
    response = _any.decode(stored.response)
    if response.get("status") != ResponseStatus.QUEUED:
        return None
    response["status"] = ResponseStatus.IN_PROGRESS
    return msgspec.structs.replace(stored, response=_encoder.encode(response))


def at_upstream(stored: StoredResponse, upstream_id: str, reply: Reply) -> StoredResponse | None:
    """An ``in_progress`` response now known to run at its upstream as ``upstream_id``, with
    the provider, deployment and model that ``reply`` (the upstream's queued response) names
    (``None``: it is not running any more)."""
    if status(stored) != ResponseStatus.IN_PROGRESS:
        return None
    model = reply.headers.get(headers.MODEL) or str(_any.decode(stored.body).get("model", ""))
    return msgspec.structs.replace(
        stored,
        upstream_id=upstream_id,
        provider=reply.headers.get(headers.PROVIDER, ""),
        deployment=reply.headers.get(headers.DEPLOYMENT, ""),
        model=model,
    )


def finished(
    stored: StoredResponse, response_id: str, reply: Reply, charged: dict[str, str] | None = None
) -> StoredResponse | None:
    """The outcome of a run, under the response's own id, with what it is charged
    (``None``: it was cancelled, or finished already)."""
    queued = _any.decode(stored.response)
    if queued.get("status") in ResponseStatus.FINAL:
        return None
    upstream_id = ""
    if reply.status == 200:
        response = _any.decode(reply.body)
        upstream_id = str(response.get("id", ""))
        response.update(id=response_id, background=True, created_at=queued.get("created_at"))
    else:
        response = queued
        try:
            error = _envelope.decode(reply.body).error
            code, message = error.code or "server_error", error.message
        except msgspec.MsgspecError:
            code, message = "server_error", reply.body[:300].decode(errors="replace")
        response.update(status=ResponseStatus.FAILED, error={"code": code, "message": message})
    return msgspec.structs.replace(
        stored,
        response=_encoder.encode(response),
        upstream_id=upstream_id if upstream_id != response_id else "",
        provider=reply.headers.get(headers.PROVIDER, stored.provider),
        body=b"",
        headers={},
        charged=charged or {},
    )


def cancelled(stored: StoredResponse) -> StoredResponse | None:
    """``stored`` marked ``cancelled``, or ``None`` when it finished already."""
    response = _any.decode(stored.response)
    if response.get("status") in ResponseStatus.FINAL:
        return None
    response["status"] = ResponseStatus.CANCELLED
    return msgspec.structs.replace(stored, response=_encoder.encode(response))
