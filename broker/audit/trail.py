"""What a broker records of admin actions, and whether it may take one now.

Every admin action a broker takes is recorded after it is applied, with its outcome; the
record is written by the :class:`~edge_runtime.audit.AuditWriter` in the background, so the
action never waits on JetStream. When JetStream has been unavailable long enough for the
writer's queue to fill (``audit.max_pending`` records), :meth:`AdminAudit.admits` says no and
the broker refuses admin actions with 503 (fail closed) rather than take one it cannot record.

Refused console requests are recorded too, at most once a minute per (key, peer, reason):
a page left open at the sign-in prompt asks twice a second, and an attacker could ask far
more often; the next record of the same refusal counts the ones in between (``repeats``).
"""

from __future__ import annotations

import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import msgspec
from nats.aio.msg import Msg

from broker.audit.actions import MAX_PARAM_CHARS
from broker.tenancy.tenants import KeyRing, presented_hash
from edge_runtime.audit import Entry, iso_time
from schemas import audit, headers
from schemas.audit import Actor, Origin

__all__ = ["REFUSAL_QUIET_S", "AdminAudit", "RecordSink"]

log = logging.getLogger("llm_edge.audit")

#: One record per (key, peer, reason) of refused console requests per this many seconds.
REFUSAL_QUIET_S = 60.0
#: Distinct refusals remembered for that (the oldest forgotten first).
MAX_QUIET = 1024
_report = msgspec.json.Decoder(dict[str, Any])


class RecordSink(Protocol):
    """Where entries go: :class:`~edge_runtime.audit.AuditWriter` (tests pass a list)."""

    @property
    def full(self) -> bool:
        """Whether no more entries may be taken until some are written."""
        ...

    def submit(self, entry: Entry, *, droppable: bool = False) -> bool:
        """Queue an entry (a droppable one may be dropped: ``False``)."""
        ...


class AdminAudit:
    """Records admin actions of one broker.

    Args:
        writer: where records go.
        keys: who is who (a key's tenant and role).
        clock: wall-clock seconds.
    """

    def __init__(self, writer: RecordSink, keys: KeyRing, clock: Callable[[], float]) -> None:
        self._writer = writer
        self._keys = keys
        self._clock = clock
        self._quiet: OrderedDict[tuple[str, str, str], list[float]] = OrderedDict()

    def admits(self) -> bool:
        """Whether an admin action may be taken now: ``False`` once the records waiting for
        JetStream reach ``audit.max_pending``."""
        return not self._writer.full

    def record(
        self,
        action: str,
        hdrs: Mapping[str, str],
        *,
        status: int,
        params: dict[str, Any] | None = None,
        detail: str = "",
    ) -> None:
        """Record an admin action taken (or refused) for the sender of ``hdrs``."""
        self._writer.submit(self._entry(action, hdrs, status, params or {}, detail))

    def refused(self, hdrs: Mapping[str, str], *, status: int, params: dict[str, Any]) -> None:
        """Record a refused console request (rate-bounded; dropped first when JetStream is
        away, see :class:`~edge_runtime.audit.AuditWriter`)."""
        entry = self._entry(audit.CONSOLE_REFUSED, hdrs, status, params, "")
        quiet = (entry.actor.key, entry.origin.peer, str(params.get("reason", "")))
        now = self._clock()
        seen = self._quiet.get(quiet)
        if seen is not None and now - seen[0] < REFUSAL_QUIET_S:
            seen[1] += 1
            return
        if seen is not None and seen[1]:
            entry.params["repeats"] = int(seen[1])
        self._quiet[quiet] = [now, 0]
        self._quiet.move_to_end(quiet)
        while len(self._quiet) > MAX_QUIET:
            self._quiet.popitem(last=False)
        self._writer.submit(entry, droppable=True)

    def started(self, params: dict[str, Any]) -> None:
        """Record that this broker started with a configuration (``params``: its summary)."""
        origin = Origin(via="broker", peer=socket.gethostname(), client=f"pid {os.getpid()}")
        entry = Entry(
            time=iso_time(self._clock()),
            action=audit.CONFIG_LOADED,
            outcome="ok",
            status=200,
            actor=Actor(role="system"),
            origin=origin,
            params=params,
        )
        self._writer.submit(entry)

    async def on_report(self, msg: Msg) -> None:
        """A console request the bridge refused (``llm.admin.audit.report``)."""
        try:
            report = _report.decode(msg.data)
            status = int(report.get("status", 403))
        except (msgspec.MsgspecError, TypeError, ValueError):
            log.warning("audit: ignored a malformed refusal report")
            return
        params = {
            k: str(report[k])[:MAX_PARAM_CHARS]
            for k in ("reason", "method", "path")
            if report.get(k) is not None
        }
        self.refused(msg.headers or {}, status=status, params=params)

    def actor(self, hdrs: Mapping[str, str]) -> Actor:
        """Who sent a command: the key presented (by hash) and what it is."""
        authorization = hdrs.get(headers.AUTHORIZATION)
        if not authorization:
            return Actor(role="anonymous")
        key = presented_hash(authorization)
        if key in self._keys.console_keys:
            return Actor(key=key, role="console")
        if not self._keys.required:  # an open broker: a key means nothing
            return Actor(key=key, role="anonymous")
        tenant = self._keys.tenant_for(authorization)
        if tenant is None:
            return Actor(key=key, role="unknown")
        role = "admin" if self._keys.is_admin(authorization) else "tenant"
        return Actor(key=key, tenant=tenant.name, role=role)

    def _entry(
        self,
        action: str,
        hdrs: Mapping[str, str],
        status: int,
        params: dict[str, Any],
        detail: str,
    ) -> Entry:
        return Entry(
            time=iso_time(self._clock()),
            action=action,
            outcome=audit.outcome_of(status),
            status=status,
            actor=self.actor(hdrs),
            origin=_origin(hdrs),
            params=params,
            detail=detail[:MAX_PARAM_CHARS],
        )


def _origin(hdrs: Mapping[str, str]) -> Origin:
    """Where a command came from, as its sender says (bounded, printable text)."""
    return Origin(
        via=_text(hdrs.get(headers.ADMIN_VIA)) or "nats",
        peer=_text(hdrs.get(headers.ADMIN_PEER)),
        client=_text(hdrs.get(headers.ADMIN_CLIENT)),
    )


def _text(value: str | None) -> str:
    if not value:
        return ""
    return "".join(c for c in value[:MAX_PARAM_CHARS] if c.isprintable())
