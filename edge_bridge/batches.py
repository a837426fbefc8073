"""``/v1/files`` and ``/v1/batches`` on the bridge.

Files go straight between HTTP and the JetStream object store (streamed through temporary
files, never held in memory); batch operations are forwarded to ``llm.batch.*``, where the
brokers' batch engine answers. Who the caller is stays the brokers' business: the bridge
passes the ``Authorization`` header along, and before a file operation it asks
``llm.batch.whoami`` which tenant the key belongs to (files are kept per tenant).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.nuid import NUID

from edge_bridge.asgi import nats_headers, read_body
from edge_bridge.multipart import UploadTooLarge, parse_upload
from edge_runtime.batch_store import BatchStore
from schemas import error_body, headers, subjects
from schemas.batch import MAX_FILE_BYTES, FileObject

__all__ = ["BatchRoutes"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_FILE = re.compile(r"^/v1/files/([A-Za-z0-9_-]+)(/content)?$")
_BATCH = re.compile(r"^/v1/batches/([A-Za-z0-9_-]+)(/cancel)?$")
_encoder = msgspec.json.Encoder()
_whoami = msgspec.json.Decoder(dict[str, str])
PURPOSES = frozenset({"batch", "batch_output"})
STREAM_CHUNK = 256 * 1024


async def _json(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    response_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, status: int, code: str, message: str) -> None:
    await _json(send, status, error_body(status, code, message))


class BatchRoutes:
    """Handles the files and batches paths.

    Args:
        nc: NATS connection.
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._store: BatchStore | None = None
        self._nuid = NUID()

    async def _files(self) -> BatchStore:
        if self._store is None:
            self._store = await BatchStore.open(self._nc)
        return self._store

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Serve the request if it is ours; ``False`` otherwise."""
        method, path = scope["method"], scope["path"].rstrip("/")
        forwarded = nats_headers(scope)
        passed = (headers.AUTHORIZATION, headers.PRIORITY)
        auth = {name: forwarded[name] for name in passed if name in forwarded}
        file_match = _FILE.match(path)
        if path == "/v1/files" or file_match is not None:
            owner = await self._whoami(send, auth)
            if owner is None:
                return True
            if file_match is not None:
                file_id, content = file_match.group(1), bool(file_match.group(2))
                await self._file(method, file_id, content, owner, send)
            elif method == "POST":
                await self._upload(scope, receive, send, owner)
            else:
                await self._list_files(send, owner)
            return True
        if path == "/v1/batches":
            if method == "POST":
                body = await read_body(receive, 1 << 20)
                if body is None:
                    await _error(send, 413, "request_too_large", "the body is over 1 MiB")
                else:
                    await self._forward(send, "create", body, auth)
            else:
                query = parse_qs(scope.get("query_string", b"").decode())
                params = {k: v[0] for k, v in query.items() if k in {"limit", "after"}}
                await self._forward(send, "list", _encoder.encode(params), auth)
            return True
        if match := _BATCH.match(path):
            op = "cancel" if match.group(2) else "get"
            await self._forward(send, op, _encoder.encode({"id": match.group(1)}), auth)
            return True
        return False

    async def _ask(self, send: Send, op: str, body: bytes, auth: dict[str, str]) -> Msg | None:
        """Request ``llm.batch.<op>``; on no broker or no answer, reply the error and ``None``."""
        try:
            return await self._nc.request(
                f"{subjects.BATCH_PREFIX}.{op}", body, timeout=30, headers=auth or None
            )
        except NoRespondersError:
            await _error(send, 503, "no_broker", "no broker is running")
        except NatsTimeout:
            await _error(send, 504, "deadline_exceeded", "the broker did not answer in time")
        return None

    async def _forward(self, send: Send, op: str, body: bytes, auth: dict[str, str]) -> None:
        reply = await self._ask(send, op, body, auth)
        if reply is not None:
            status = int((reply.headers or {}).get(headers.STATUS, "200"))
            await _json(send, status, reply.data)

    async def _whoami(self, send: Send, auth: dict[str, str]) -> str | None:
        """The caller's tenant; ``None`` after answering the refusal (401, 503 ...)."""
        reply = await self._ask(send, "whoami", b"", auth)
        if reply is None:
            return None
        status = int((reply.headers or {}).get(headers.STATUS, "200"))
        if status != 200:
            await _json(send, status, reply.data)
            return None
        return str(_whoami.decode(reply.data)["tenant"])

    async def _upload(self, scope: Scope, receive: Receive, send: Send, owner: str) -> None:
        content_type = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"content-type"), ""
        )
        try:
            upload = await parse_upload(content_type, receive, MAX_FILE_BYTES)
        except UploadTooLarge:
            await _error(
                send, 413, "file_too_large", f"files are limited to {MAX_FILE_BYTES} bytes"
            )
            return
        except ValueError as exc:
            await _error(send, 400, "invalid_request", str(exc))
            return
        if upload.file is None:
            await _error(send, 400, "invalid_request", "the form has no file part")
            return
        purpose = upload.fields.get("purpose", "")
        try:
            if purpose not in PURPOSES:
                await _error(
                    send, 400, "invalid_value", f"purpose must be one of {sorted(PURPOSES)}"
                )
                return
            file = FileObject(
                id=f"file-{self._nuid.next().decode()}",
                bytes=upload.size,
                created_at=int(time.time()),
                filename=upload.filename or "upload",
                purpose=purpose,
            )
            await (await self._files()).put_file(file, upload.file, owner)  # type: ignore[arg-type]
        finally:
            upload.file.close()
        await _json(send, 200, _encoder.encode(file))

    async def _list_files(self, send: Send, owner: str) -> None:
        files = await (await self._files()).list_files(owner)
        await _json(
            send, 200, _encoder.encode({"object": "list", "data": files, "has_more": False})
        )

    async def _file(self, method: str, file_id: str, content: bool, owner: str, send: Send) -> None:
        store = await self._files()
        if method == "DELETE" and not content:
            if not await store.delete_file(file_id, owner):
                await _error(send, 404, "file_not_found", f"no file {file_id!r}")
                return
            await _json(
                send, 200, _encoder.encode({"id": file_id, "object": "file", "deleted": True})
            )
            return
        file = await store.get_file(file_id, owner)
        if file is None:
            await _error(send, 404, "file_not_found", f"no file {file_id!r}")
            return
        if not content:
            await _json(send, 200, _encoder.encode(file))
            return
        with tempfile.TemporaryFile() as spool:
            await store.read_file(file_id, spool)
            spool.seek(0)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/jsonl"),
                        (b"content-length", str(file.bytes).encode()),
                    ],
                }
            )
            while chunk := await asyncio.to_thread(spool.read, STREAM_CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
