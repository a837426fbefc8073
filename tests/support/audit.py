"""Watching the audit trail as it is written: every record stored in the trail's stream (read
through an ordered consumer, so a record seen is a record stored), waited for by what it says
(never by time)."""

from __future__ import annotations

import argparse
import asyncio
import io
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from llm_edge.audit_cli import add_audit_command, run_audit_command
from schemas.audit import AuditRecord, decode_record
from schemas.jetstream import AUDIT_STREAM, AUDIT_SUBJECT

__all__ = ["TrailWatch", "audit_command"]

PATIENCE_S = 20.0


class TrailWatch:
    """Every record of the trail (those already stored, then each new one), in order."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self._changed = asyncio.Condition()
        self._sub: JetStreamContext.PushSubscription | None = None

    @classmethod
    async def start(cls, nc: Client) -> TrailWatch:
        watch = cls()
        watch._sub = await nc.jetstream().subscribe(
            AUDIT_SUBJECT,
            stream=AUDIT_STREAM,
            cb=watch._seen,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.ALL,
        )
        return watch

    async def _seen(self, msg: Msg) -> None:
        async with self._changed:
            self.records.append(decode_record(msg.data))
            self._changed.notify_all()

    async def until(
        self, check: Callable[[list[AuditRecord]], bool], timeout_s: float = PATIENCE_S
    ) -> list[AuditRecord]:
        """The records once ``check`` holds for them."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: check(self.records))
            return list(self.records)

    async def action(self, action: str, count: int = 1) -> list[AuditRecord]:
        """The records once ``count`` records of ``action`` were written."""
        records = await self.until(lambda rs: sum(r.action == action for r in rs) >= count)
        return [r for r in records if r.action == action]

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


async def audit_command(nc: Client, *argv: str) -> tuple[int, str]:
    """``llm-edge audit ARGV`` run in this process on ``nc`` (the command's own parser and
    code): its exit code and output."""
    parser = argparse.ArgumentParser()
    add_audit_command(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    code = await run_audit_command(nc, parser.parse_args(["audit", *argv]), out)
    return code, out.getvalue()
