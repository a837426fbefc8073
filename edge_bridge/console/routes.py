"""``/console``: the operator console's page and its JSON API on the bridge.

Everything shown comes from the mesh over NATS: ``$SRV.STATS`` (every process),
``llm.admin.status`` and ``llm.admin.requests`` (every broker), ``llm.admin.keys``,
``llm.admin.spend`` and ``llm.admin.cache.size`` (one broker), the batch records in JetStream.
Commands go back the same way (``llm.admin.breaker`` and ``llm.admin.cache.purge`` reach every
broker), with the caller's key and address for the audit trail (brokers record each command);
a refused request is reported on ``llm.admin.audit.report``. ``/console/api/audit`` shows the
trail's latest records and whether its chain holds (:mod:`edge_bridge.console.audit`).

The page polls once a second while it is open; a closed page asks nothing. Every API call
is authorized: with keys configured it needs an admin key (``[console] keys`` or a tenant
with ``admin = true``: 401 without a key, 403 with another); without keys the console is
open to loopback callers only. The caller's key goes with every admin request it leads to:
brokers with admin keys check it again (a bridge's NATS identity alone is not an admin).

No web page can drive it (:func:`_cross_site`): a browser the operator uses for other sites
may be on the same machine, and loopback trust is exactly what such a page would borrow.
Every API call naming another ``Origin`` is refused; every command (POST) must be JSON and
carry ``X-Llm-Console: 1``, which neither a form nor a cross-site ``fetch`` can send without
a CORS preflight that the bridge never grants. Without keys, the ``Host`` must also be a
loopback name or address, or one the operator configured (``--console-host``): a page that
re-binds its own domain to 127.0.0.1 (DNS rebinding) sends its own domain as ``Host``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from edge_bridge.asgi import nats_headers, read_body
from edge_bridge.console.audit import AuditPanel
from edge_bridge.console.gather import gather
from edge_bridge.console.queues import admission_view
from edge_bridge.console.view import ServiceBook, batch_rows, cache_summary, deployment_rows
from edge_runtime.audit import admin_headers
from edge_runtime.batch_store import BatchStore
from schemas import error_body, headers, subjects

__all__ = ["ConsoleRoutes"]

Scope = MutableMapping[str, Any]
#: Why a console request is refused: status, error code, message.
Refusal = tuple[int, str, str]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])
#: One poll's answer is reused this long, so several open pages cost the mesh one poll.
STATE_TTL_S = 0.5
#: Batches listed at most (newest first).
MAX_BATCHES = 100
ASK_TIMEOUT_S = 5.0
_ASSETS = {
    "/console": ("console.html", b"text/html; charset=utf-8"),
    "/console/console.js": ("console.js", b"text/javascript; charset=utf-8"),
    "/console/console.css": ("console.css", b"text/css; charset=utf-8"),
}
_KEY_ACTIONS = {
    "/console/api/keys": "create",
    "/console/api/keys/update": "update",
    "/console/api/keys/revoke": "revoke",
}
_FILE = re.compile(r"^/console/api/files/([A-Za-z0-9_-]+)$")
_CANCEL = re.compile(r"^/console/api/batches/([A-Za-z0-9_-]+)/cancel$")
_SECURITY = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
]


class ConsoleRoutes:
    """Serves ``/console`` and ``/console/api/*``.

    Args:
        nc: the bridge's NATS connection.
        clock: wall-clock seconds.
    """

    def __init__(
        self,
        nc: Client,
        clock: Callable[[], float] = time.time,
        *,
        public_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self._nc = nc
        self._public_hosts = frozenset(h.lower() for h in public_hosts)
        self._clock = clock
        self._book = ServiceBook()
        self._store: BatchStore | None = None
        self._state: tuple[float, bytes] | None = None
        self._lock = asyncio.Lock()
        self._expect = {"services": 0, "brokers": 0}
        self._audit = AuditPanel(nc)
        self._assets = {
            path: (resources.files(__package__).joinpath("static", name).read_bytes(), kind)
            for path, (name, kind) in _ASSETS.items()
        }

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a ``/console`` path."""
        method, path = scope["method"], scope["path"].rstrip("/")
        if path in self._assets:
            if method != "GET":
                await _error(send, 405, "method_not_allowed", f"{method} is not allowed")
                return
            body, kind = self._assets[path]
            await _reply(send, 200, body, kind)
            return
        if not path.startswith("/console/api/"):
            await _error(send, 404, "not_found", f"no route for {method} {path}")
            return
        refusal = _cross_site(method, _request_headers(scope))
        if refusal is None:
            auth = nats_headers(scope).get(headers.AUTHORIZATION)
            refusal = await self._authorize(scope, auth)
        if refusal is not None:
            await self._refuse(scope, refusal, send)
            return
        admin = {headers.AUTHORIZATION: auth} if auth else None
        await self._api(method, path, scope, receive, send, admin=admin)

    async def _api(
        self,
        method: str,
        path: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        admin: dict[str, str] | None,
    ) -> None:
        if (method, path) == ("GET", "/console/api/state"):
            await _reply(send, 200, await self._snapshot(admin))
        elif (method, path) == ("GET", "/console/api/audit"):
            await _reply(send, 200, _encoder.encode(await self._audit.snapshot()))
        elif (method, path) == ("GET", "/console/api/requests"):
            query = parse_qs(scope.get("query_string", b"").decode())
            await self._requests({k: v[0] for k, v in query.items()}, send, admin)
        elif method == "GET" and (match := _FILE.match(path)):
            await self._download(match.group(1), send)
        elif method != "POST":
            await _error(send, 405, "method_not_allowed", f"{method} is not allowed on {path}")
        else:
            body = await read_body(receive, 64 * 1024)
            try:
                command = _decoder.decode(body) if body else {}
            except msgspec.MsgspecError:
                await _error(send, 400, "invalid_request", "the body must be a JSON object")
                return
            await self._command(path, command, self._caller(scope), send)

    def _caller(self, scope: Scope) -> dict[str, str]:
        """The headers a command carries for the audit trail: the caller's key and address."""
        auth = nats_headers(scope).get(headers.AUTHORIZATION)
        return admin_headers(self._nc, via="console", peer=_peer(scope), authorization=auth)

    async def _command(
        self, path: str, command: dict[str, Any], caller: dict[str, str], send: Send
    ) -> None:
        if path == "/console/api/breaker":
            await self._everyone(subjects.BREAKER_ADMIN, command, caller, send)
        elif path == "/console/api/purge":
            await self._everyone(subjects.CACHE_PURGE, command, caller, send)
        elif path in _KEY_ACTIONS:
            action = _KEY_ACTIONS[path]
            await self._one(
                subjects.ADMIN_KEYS,
                {**command, "action": action},
                caller,
                send,
                after=lambda: self._reload_keys(caller),
            )
        elif match := _CANCEL.match(path):
            await self._one(subjects.ADMIN_BATCH_CANCEL, {"id": match.group(1)}, caller, send)
        else:
            await _error(send, 404, "not_found", f"no route for POST {path}")
            return
        self._state = None  # the next poll shows the command's effect

    async def _authorize(self, scope: Scope, auth: str | None) -> Refusal | None:
        """Why the caller may not use the console (status, code, message), ``None`` if it may."""
        try:
            reply = await self._nc.request(
                subjects.ADMIN_AUTHORIZE,
                b"",
                timeout=ASK_TIMEOUT_S,
                headers={headers.AUTHORIZATION: auth} if auth else None,
            )
            verdict = _decoder.decode(reply.data)
        except (NoRespondersError, NatsTimeout, msgspec.MsgspecError):
            return 503, "no_broker", "no broker answers: the console needs one"
        if verdict.get("admin") is True:
            return None
        if not verdict.get("keys"):
            return self._open_to(scope)
        if not auth:
            return 401, "unauthorized", "the console needs an admin key"
        return 403, "forbidden", "this key is not an admin key"

    def _open_to(self, scope: Scope) -> Refusal | None:
        """Without keys: a loopback peer that names a loopback (or configured) ``Host``."""
        if not _loopback(scope):
            message = "no keys are configured: the console is open on loopback only"
            return 403, "console_loopback_only", message
        if not self._host_allowed(_request_headers(scope).get("host", "")):
            message = (
                "no keys are configured: the console answers only to a loopback Host or a "
                "--console-host name"
            )
            return 403, "console_host_refused", message
        return None

    async def _refuse(self, scope: Scope, refusal: Refusal, send: Send) -> None:
        """Answer a refusal; report it for the audit trail (a broker that is not there to
        answer is not a refusal of the caller)."""
        status, code, message = refusal
        await _error(send, status, code, message)
        if status == 503:
            return
        report = {
            "reason": code,
            "status": status,
            "method": scope["method"],
            "path": scope["path"],
        }
        with contextlib.suppress(Exception):  # a report lost is a record lost, never an error
            await self._nc.publish(
                subjects.ADMIN_AUDIT_REPORT, _encoder.encode(report), headers=self._caller(scope)
            )

    def _host_allowed(self, host: str) -> bool:
        """A loopback ``Host``, or a name the operator configured for the console."""
        name = (urlsplit(f"//{host}").hostname or "").lower()
        return _loopback_host(host) or name in self._public_hosts

    async def _snapshot(self, admin: dict[str, str] | None) -> bytes:
        """The page's state (shared by the callers of one poll: each was authorized)."""
        async with self._lock:
            now = self._clock()
            if self._state is not None and now - self._state[0] < STATE_TTL_S:
                return self._state[1]
            body = _encoder.encode(await self._collect(now, admin))
            self._state = (now, body)
            return body

    async def _collect(self, now: float, admin: dict[str, str] | None) -> dict[str, Any]:
        brokers = self._expect["brokers"]
        stats, statuses, tenants, spend, batches, l2_size = await asyncio.gather(
            gather(self._nc, "$SRV.STATS", expect=self._expect["services"]),
            gather(self._nc, subjects.ADMIN_STATUS, headers=admin, expect=brokers),
            self._ask(subjects.ADMIN_KEYS, {"action": "list"}, admin),
            self._ask(subjects.ADMIN_SPEND, {}, admin),
            self._batches(now),
            self._ask(subjects.ADMIN_CACHE_SIZE, {}, admin),
        )
        self._expect = {"services": len(stats), "brokers": len(statuses)}
        stat_bodies = _bodies(stats)
        status_bodies = _bodies(statuses)
        return {
            "time": now,
            "services": self._book.update(stat_bodies, now),
            "deployments": deployment_rows(status_bodies),
            "admission": admission_view(status_bodies),
            "cache": cache_summary(status_bodies, l2_size),
            "batches": batches,
            "tenants": tenants,
            "spend": spend,
        }

    async def _batches(self, now: float) -> list[dict[str, Any]] | None:
        try:
            if self._store is None:
                self._store = await BatchStore.open(self._nc)
            ids = sorted(await self._store.all_ids(), reverse=True)[:MAX_BATCHES]
            records = [r for i in ids if (r := await self._store.get(i)) is not None]
        except Exception:  # no JetStream, or a slow one: the page says batches are unknown
            return None
        return batch_rows(records, now)

    async def _ask(
        self, subject: str, command: dict[str, Any], admin: dict[str, str] | None
    ) -> Any:
        """One broker's answer, or ``None``."""
        with contextlib.suppress(NoRespondersError, NatsTimeout, msgspec.MsgspecError):
            reply = await self._nc.request(
                subject, _encoder.encode(command), timeout=ASK_TIMEOUT_S, headers=admin
            )
            if (reply.headers or {}).get(headers.STATUS, "200") == "200":
                return _decoder.decode(reply.data)
        return None

    async def _requests(
        self, query: dict[str, str], send: Send, admin: dict[str, str] | None
    ) -> None:
        command: dict[str, Any] = {
            k: query[k] for k in ("tenant", "model", "status", "cache") if query.get(k)
        }
        command["limit"] = 100
        replies = _bodies(
            await gather(
                self._nc,
                subjects.ADMIN_REQUESTS,
                _encoder.encode(command),
                headers=admin,
                expect=self._expect["brokers"],
            )
        )
        rows = [{**r, "broker": b.get("id", "")} for b in replies for r in b.get("requests", [])]
        rows.sort(key=lambda r: float(r.get("time", 0)), reverse=True)
        await _reply(send, 200, _encoder.encode({"requests": rows[:100]}))

    async def _everyone(
        self, subject: str, command: dict[str, Any], caller: dict[str, str], send: Send
    ) -> None:
        """A command every broker applies; 200 when all that answered took it."""
        replies = await gather(self._nc, subject, _encoder.encode(command), headers=caller)
        if not replies:
            await _error(send, 503, "no_broker", "no broker answered")
            return
        statuses = [int((r.headers or {}).get(headers.STATUS, "200")) for r in replies]
        failed = next((r for r, s in zip(replies, statuses, strict=True) if s != 200), None)
        if failed is not None:
            await _reply(send, max(statuses), failed.data)
            return
        answers = [_decoder.decode(r.data) for r in replies]
        await _reply(send, 200, _encoder.encode({"brokers": len(replies), "answers": answers}))

    async def _one(
        self,
        subject: str,
        command: dict[str, Any],
        caller: dict[str, str],
        send: Send,
        *,
        after: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """A command one broker answers; ``after`` runs when it succeeded, before the reply."""
        try:
            reply = await self._nc.request(
                subject, _encoder.encode(command), timeout=ASK_TIMEOUT_S, headers=caller
            )
        except (NoRespondersError, NatsTimeout):
            await _error(send, 503, "no_broker", "no broker answered")
            return
        status = int((reply.headers or {}).get(headers.STATUS, "200"))
        if status == 200 and after is not None:
            await after()
        await _reply(send, status, reply.data)

    async def _reload_keys(self, caller: dict[str, str]) -> None:
        """Every broker re-reads the run-time keys before the page hears the key changed."""
        await gather(
            self._nc, subjects.ADMIN_KEYS_RELOAD, headers=caller, expect=self._expect["brokers"]
        )

    async def _download(self, file_id: str, send: Send) -> None:
        """A batch's output or error file (any tenant's: the caller is an admin)."""
        if self._store is None:
            self._store = await BatchStore.open(self._nc)
        file = await self._store.get_file(file_id)
        if file is None:
            await _error(send, 404, "file_not_found", f"no file {file_id!r}")
            return
        with tempfile.TemporaryFile() as spool:
            await self._store.read_file(file_id, spool)
            spool.seek(0)
            data = await asyncio.to_thread(spool.read)
        disposition = f'attachment; filename="{file_id}.jsonl"'.encode()
        await _reply(send, 200, data, b"application/jsonl", [(b"content-disposition", disposition)])


def _bodies(replies: list[Any]) -> list[dict[str, Any]]:
    out = []
    for reply in replies:
        with contextlib.suppress(msgspec.MsgspecError):
            out.append(_decoder.decode(reply.data))
    return out


#: The header every console command carries (a form cannot send it; a cross-site fetch
#: cannot either without a CORS preflight, which is never granted).
CONSOLE_HEADER = "x-llm-console"


def _request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers, lower-case names (the last of a repeated one)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _cross_site(method: str, hdrs: dict[str, str]) -> Refusal | None:
    """Why a console API call looks like another site's (status, code, message), or ``None``.

    An ``Origin`` (browsers send it on every cross-origin request and on same-origin
    POSTs) must name the ``Host`` the request was sent to; a command must be JSON with the
    console's own header.
    """
    origin = hdrs.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != hdrs.get("host", "").lower():
        return 403, "cross_origin", f"requests from {origin} may not use the console"
    if method == "POST":
        kind = hdrs.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            return 415, "unsupported_media_type", "console commands are application/json"
        if hdrs.get(CONSOLE_HEADER) != "1":
            return 403, "console_header_missing", "console commands carry X-Llm-Console: 1"
    return None


def _loopback_host(host: str) -> bool:
    """Whether a ``Host`` header names this machine: ``localhost`` (or a name under it), or
    a loopback address, with any port."""
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _peer(scope: Scope) -> str:
    """The HTTP caller's address (the peer of the connection, never ``X-Forwarded-For``)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def _loopback(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


async def _reply(
    send: Send,
    status: int,
    body: bytes,
    kind: bytes = b"application/json",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    response_headers = [
        (b"content-type", kind),
        (b"content-length", str(len(body)).encode()),
        *_SECURITY,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, status: int, code: str, message: str) -> None:
    await _reply(send, status, error_body(status, code, message))
