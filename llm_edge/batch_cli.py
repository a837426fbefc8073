"""``llm-edge batch ...``: submit (with a live progress line), status, results, cancel, list."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.nuid import NUID

from edge_client import EdgeClient
from edge_runtime.batch_store import BatchStore
from schemas import headers, subjects
from schemas.batch import FINAL_STATUSES, FileObject

__all__ = ["add_batch_commands", "run_batch_command"]

_json = msgspec.json.Decoder(dict[str, Any])


def add_batch_commands(sub: Any, api_key: str | None) -> argparse.ArgumentParser:
    """Register ``batch`` and its sub-commands on the CLI parser.

    Args:
        sub: the command's sub-parsers.
        api_key: the default ``--api-key`` (the entry point reads ``LLM_EDGE_API_KEY``).

    Returns:
        The ``batch`` parser (the entry point adds the connection options every command takes).
    """
    batch: argparse.ArgumentParser = sub.add_parser(
        "batch", help="bulk jobs (OpenAI Batch API semantics)"
    )
    batch.add_argument(
        "--api-key",
        default=api_key,
        help="your key when the brokers require keys (env LLM_EDGE_API_KEY)",
    )
    cmds = batch.add_subparsers(dest="batch_command", required=True)
    submit = cmds.add_parser("submit", help="upload a JSONL file and start a batch")
    submit.add_argument("file", type=Path)
    submit.add_argument("--endpoint", default="/v1/chat/completions")
    submit.add_argument("--window", default="24h", help="completion window (24h, 48h, 7d)")
    submit.add_argument("--wait", action="store_true", help="follow progress until it ends")
    for name in ("status", "cancel"):
        cmds.add_parser(name, help=f"{name} of a batch").add_argument("id")
    results = cmds.add_parser("results", help="download a batch's output (or error) file")
    results.add_argument("id")
    results.add_argument("-o", "--output", type=Path, required=True)
    results.add_argument("--errors", action="store_true", help="the error file instead")
    cmds.add_parser("list", help="recent batches")
    return batch


async def _call(
    nc: Client, args: argparse.Namespace, op: str, body: dict[str, Any]
) -> dict[str, Any]:
    auth = {headers.AUTHORIZATION: f"Bearer {args.api_key}"} if args.api_key else None
    reply = await nc.request(
        f"{subjects.BATCH_PREFIX}.{op}", msgspec.json.encode(body), timeout=60, headers=auth
    )
    result = _json.decode(reply.data)
    if (reply.headers or {}).get(headers.STATUS, "200") != "200":
        raise RuntimeError(result.get("error", {}).get("message", reply.data.decode()))
    return result


def _progress(batch: dict[str, Any], started: float) -> str:
    counts = batch["request_counts"]
    done = counts["completed"] + counts["failed"]
    total = counts["total"] or 0
    rate = done / max(time.monotonic() - started, 1e-3)
    eta = f"{(total - done) / rate:.0f}s" if rate > 0 and total else "?"
    width = 30
    filled = int(width * done / total) if total else 0
    bar = "#" * filled + "-" * (width - filled)
    return (
        f"\r[{bar}] {done}/{total} ok={counts['completed']} failed={counts['failed']} "
        f"{rate:.0f}/s ETA {eta} {batch['status']}   "
    )


async def _submit(nc: Client, args: argparse.Namespace) -> dict[str, Any]:
    store = await BatchStore.open(nc)
    path: Path = args.file
    file = FileObject(
        id=f"file-{NUID().next().decode()}",
        bytes=path.stat().st_size,  # noqa: ASYNC240  (one stat of a local file)
        created_at=int(time.time()),
        filename=path.name,
        purpose="batch",
    )
    owner = (await _call(nc, args, "whoami", {}))["tenant"]  # files are kept per tenant
    with path.open("rb") as handle:
        await store.put_file(file, handle, owner)
    # subscribe before the batch exists (its id is not known yet): the tenant's events
    events = await nc.subscribe(subjects.batch_events(owner, "*"))
    batch = await _call(
        nc,
        args,
        "create",
        {"input_file_id": file.id, "endpoint": args.endpoint, "completion_window": args.window},
    )
    print(f"{batch['id']} {batch['status']} (input {file.id})", flush=True)
    if not args.wait:
        await events.unsubscribe()
        return batch
    started = time.monotonic()
    subject = subjects.batch_events(owner, batch["id"])
    while batch["status"] not in FINAL_STATUSES:
        msg = await events.next_msg(timeout=3600)
        if msg.subject == subject:
            batch = _json.decode(msg.data)
            print(_progress(batch, started), end="", file=sys.stderr, flush=True)
    await events.unsubscribe()
    print(file=sys.stderr)
    return batch


async def run_batch_command(nc: Client, args: argparse.Namespace) -> int:
    """Run one ``batch`` sub-command; returns the exit code."""
    command = args.batch_command
    if command == "submit":
        batch = await _submit(nc, args)
        print(json.dumps(batch, indent=2))
        return 0 if batch["status"] in {"validating", "in_progress", "completed"} else 1
    if command in {"status", "cancel"}:
        print(
            json.dumps(
                await _call(nc, args, "get" if command == "status" else "cancel", {"id": args.id}),
                indent=2,
            )
        )
        return 0
    if command == "list":
        for batch in (await _call(nc, args, "list", {"limit": 100}))["data"]:
            counts = batch["request_counts"]
            print(
                f"{batch['id']}  {batch['status']:<11} {counts['completed']}/{counts['total']}"
                f" ok, {counts['failed']} failed"
            )
        return 0
    batch = await _call(nc, args, "get", {"id": args.id})
    file_id = batch["error_file_id" if args.errors else "output_file_id"]
    if not file_id:
        print(
            f"batch {args.id} has no {'error' if args.errors else 'output'} file "
            f"(status {batch['status']})",
            file=sys.stderr,
        )
        return 1
    client = EdgeClient(nc, api_key=args.api_key)  # the file, read through the brokers
    with args.output.open("wb") as out:
        await client.batches.download(file_id, out)
    print(f"wrote {args.output}")
    return 0
