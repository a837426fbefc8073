"""``llm-edge audit``: list the audit trail (filters: since, action, actor), follow it, or
verify its chain (exit 1 at the first break, naming it)."""

from __future__ import annotations

import argparse
import re
import sys
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import msgspec
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from edge_runtime.audit import Stored, read_stored, verify_trail
from schemas.audit import ACTIONS, AuditRecord, decode_record
from schemas.jetstream import AUDIT_STREAM

__all__ = ["add_audit_command", "parse_since", "run_audit_command"]

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_audit_command(sub: Any) -> argparse.ArgumentParser:
    """Register ``audit`` on the CLI parser; the entry point adds the connection options."""
    audit: argparse.ArgumentParser = sub.add_parser(
        "audit", help="the audit trail of admin actions: list, follow, verify"
    )
    audit.add_argument(
        "--since", type=parse_since, help="records from then on: 15m, 2h, 7d, or an ISO 8601 time"
    )
    audit.add_argument(
        "--action",
        help=f"one action, or a family (breaker, key): {', '.join(ACTIONS)}",
    )
    audit.add_argument(
        "--actor", help="a tenant, a role (admin, console, anonymous ...), a key hash or a peer"
    )
    audit.add_argument("--limit", type=int, default=0, help="the last N matching records")
    audit.add_argument("--json", action="store_true", help="one record per line, as stored")
    mode = audit.add_mutually_exclusive_group()
    mode.add_argument("--follow", action="store_true", help="then print new records as they come")
    mode.add_argument(
        "--verify", action="store_true", help="check the hash chain (exit 1 at the first break)"
    )
    return audit


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``15m``, ``2h``, ``7d`` (ago) or an ISO 8601 time (UTC when it names no zone).

    Raises:
        argparse.ArgumentTypeError: neither.
    """
    ago = _AGO.match(text.strip())
    if ago:
        seconds = float(ago.group(1)) * _UNITS[ago.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since takes 15m, 2h, 7d or an ISO 8601 time, not {text!r}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


async def run_audit_command(nc: Client, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run ``llm-edge audit``; its exit code."""
    js = nc.jetstream(timeout=5.0)
    try:
        if args.verify:
            return await _verify(js, out)
        return await _list(js, args, out)
    except NotFoundError:
        missing = f"no audit trail on this NATS server (no {AUDIT_STREAM} stream)"
        print(f"llm-edge: {missing}", file=sys.stderr)
        return 1


async def _verify(js: Any, out: TextIO) -> int:
    check = await verify_trail(js)
    if check.broken is not None:
        print(f"audit trail BROKEN at seq {check.broken.seq}: {check.broken.reason}", file=out)
        read = f"{check.records} records read, seq {check.first_seq} to {check.last_seq}"
        print(f"({read})", file=out)
        return 1
    if not check.records:
        print("audit trail empty", file=out)
        return 0
    print(
        f"audit trail intact: {check.records} records, seq {check.first_seq} to "
        f"{check.last_seq}, head sha256 {check.head}",
        file=out,
    )
    if check.first_seq > 1:
        print(f"(records before seq {check.first_seq} were removed by retention)", file=out)
    return 0


async def _list(js: Any, args: argparse.Namespace, out: TextIO) -> int:
    since: datetime | None = args.since
    records = read_stored(js, start_time=since, follow=args.follow)
    shown: deque[str] = deque(maxlen=args.limit if args.limit > 0 else None)
    async for stored, record in _matching(records, args):
        line = stored.data.decode() if args.json else _line(stored, record)
        if args.follow:
            print(line, file=out, flush=True)
        else:
            shown.append(line)
    for line in shown:
        print(line, file=out)
    return 0


async def _matching(
    records: AsyncIterator[Stored], args: argparse.Namespace
) -> AsyncIterator[tuple[Stored, AuditRecord | None]]:
    async for stored in records:
        try:
            record: AuditRecord | None = decode_record(stored.data)
        except msgspec.MsgspecError:
            record = None  # shown as is: --verify says what is wrong with it
        if record is None or _wanted(record, args):
            yield stored, record


def _wanted(record: AuditRecord, args: argparse.Namespace) -> bool:
    if args.since is not None and _when(record.time) < args.since:
        return False
    action: str | None = args.action
    if action and record.action != action and not record.action.startswith(action + "."):
        return False
    actor: str | None = args.actor
    if actor:
        hashes = {record.actor.key, record.actor.key.removeprefix("sha256:")}
        names = {record.actor.tenant, record.actor.role, record.origin.peer}
        if actor not in names and not any(h and h.startswith(actor) for h in hashes):
            return False
    return True


def _when(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def _line(stored: Stored, record: AuditRecord | None) -> str:
    if record is None:
        return f"{stored.seq:>6}  (not an audit record: {stored.data[:80]!r})"
    actor = record.actor.tenant or record.actor.role
    if record.actor.key:
        actor += f" {record.actor.key.removeprefix('sha256:')[:12]}"
    origin = " ".join(p for p in (record.origin.via, record.origin.peer) if p)
    params = msgspec.json.encode(record.params).decode() if record.params else ""
    detail = f"  ({record.detail})" if record.detail else ""
    return (
        f"{record.seq:>6}  {record.time}  {record.action:<17} {record.outcome:<11} "
        f"{actor:<24} {origin:<24} {params}{detail}"
    ).rstrip()
