"""The upstream client: a pool of keep-alive HTTP/1.1 connections per origin.

    client = UpstreamClient(max_connections=1000)
    async with client.post(url, data=body, headers=hdrs, timeout=30.0) as response:
        response.status, response.headers          # at once
        await response.read()                      # or: async for chunk in response.iter_chunks()
    await client.close()

``timeout`` bounds each wait of the call: a pooled connection or a new one (connect, TLS,
proxy tunnel), then each read; there is no total, so a stream may last while bytes keep
coming. Leaving the ``async with`` before the answer is complete (an error, a cancelled
request) closes the connection, which is how the upstream learns the call is abandoned.
Through a proxy (``proxy="http://user:pass@host:port"``) an ``http`` URL is requested in
absolute form and an ``https`` URL through a ``CONNECT`` tunnel.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import cast

from workers.h1.connection import Connection, Response
from workers.h1.errors import TransportError, TransportTimeout

__all__ = ["DEFAULT_KEEPALIVE_S", "DEFAULT_MAX_CONNECTIONS", "UpstreamClient"]

#: Connections open at once (in use and idle), all origins together.
DEFAULT_MAX_CONNECTIONS = 1000
#: An idle connection older than this is closed instead of reused (servers close them too).
DEFAULT_KEEPALIVE_S = 15.0
USER_AGENT = "llm-edge-broker"
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


@dataclass(frozen=True, slots=True)
class _Route:
    """How to reach one URL (through one proxy, or none), worked out once."""

    key: tuple[str, str | None]  # connections are shared by routes with the same key
    host: str  # where the socket connects
    port: int
    tls_hostname: str | None  # TLS to the origin, with this name
    tunnel: bytes | None  # the CONNECT request that comes first
    head: str  # request line, Host, proxy credentials, User-Agent


def _route(method: str, url: str, proxy: str | None) -> _Route:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    authority = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if ":" in parts.hostname:  # IPv6 literal
        authority = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    origin = f"{parts.scheme}://{authority}"
    if proxy is None:
        head = f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n"
        return _Route(
            (origin, None), parts.hostname, port, parts.hostname if tls else None, None, head
        )
    via = urllib.parse.urlsplit(proxy)
    if via.scheme != "http" or not via.hostname:
        raise ValueError(f"only http:// proxies are supported, not {proxy!r}")
    credentials = ""
    if via.username is not None:
        user = urllib.parse.unquote(via.username)
        password = urllib.parse.unquote(via.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        credentials = f"Proxy-Authorization: Basic {token}\r\n"
    if not tls:  # the proxy forwards an absolute-form request
        head = f"{method} {origin}{target} HTTP/1.1\r\nHost: {authority}\r\n{credentials}"
        return _Route((origin, proxy), via.hostname, via.port or 80, None, None, head)
    hostport = f"{authority}:{port}" if parts.port is None else authority
    tunnel = f"CONNECT {hostport} HTTP/1.1\r\nHost: {hostport}\r\n{credentials}\r\n".encode()
    head = f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n"
    return _Route((origin, proxy), via.hostname, via.port or 80, parts.hostname, tunnel, head)


def _request_head(route: _Route, data: bytes | bytearray, headers: Mapping[str, str]) -> bytes:
    """The request line and headers for a body of ``data`` (sent after it, not copied in)."""
    parts = [route.head, f"Content-Length: {len(data)}\r\n"]
    agent = False
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _OWN_HEADERS:
            continue
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            raise ValueError(f"header {name!r} holds a line break or a colon in its name")
        agent = agent or lowered == "user-agent"
        parts.append(f"{name}: {value}\r\n")
    if not agent:
        parts.append(f"User-Agent: {USER_AGENT}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode()


class UpstreamClient:
    """Pooled connections for one worker process; create it inside the running loop.

    Args:
        max_connections: the most connections open at once; beyond it calls wait (within
            their ``timeout``) for one to be released.
        ssl_context: what TLS trusts (default: the system's).
        keepalive_s: how long an idle connection may wait to be reused.
    """

    def __init__(
        self,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        *,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._limit = max_connections
        self._ssl = ssl_context or ssl.create_default_context()
        self._keepalive = keepalive_s
        self._idle: dict[tuple[str, str | None], list[Connection]] = {}
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._routes: dict[tuple[str, str, str | None], _Route] = {}
        self._swept = self._loop.time()
        self.closed = False

    @property
    def open_connections(self) -> int:
        """Connections open now, in use or idle."""
        return self._open

    def post(
        self,
        url: str,
        *,
        data: bytes,
        headers: Mapping[str, str],
        timeout: float,
        proxy: str | None = None,
    ) -> Call:
        """A POST, to use as ``async with client.post(...) as response``."""
        return self.request("POST", url, data=data, headers=headers, timeout=timeout, proxy=proxy)

    def request(
        self,
        method: str,
        url: str,
        *,
        data: bytes | bytearray = b"",
        headers: Mapping[str, str],
        timeout: float,
        proxy: str | None = None,
    ) -> Call:
        """Any method (``GET`` a batch's status or a file), as :meth:`post`."""
        return Call(
            self, self.route(method, url, proxy), data=data, headers=headers, timeout=timeout
        )

    async def close(self) -> None:
        """Close every idle connection; calls still running keep theirs until they end."""
        self.closed = True
        for conns in self._idle.values():
            for conn in conns:
                self.discard(conn)
        self._idle.clear()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # the pool

    def route(self, method: str, url: str, proxy: str | None) -> _Route:
        """How to reach ``url`` (worked out once per URL)."""
        found = self._routes.get((method, url, proxy))
        if found is None:
            if len(self._routes) > 1024:
                self._routes.clear()
            found = self._routes[(method, url, proxy)] = _route(method, url, proxy)
        return found

    async def acquire(self, route: _Route, wait_s: float) -> Connection:
        """An idle connection for ``route``, or a new one (within ``wait_s``).

        Raises:
            TransportError: cannot connect (:class:`TransportTimeout` when out of time).
        """
        if self.closed:
            raise TransportError("the upstream client is closed")
        conn = self._idle_for(route)
        if conn is not None:
            return conn
        try:
            async with asyncio.timeout(wait_s):
                while self._open >= self._limit:
                    if not self._close_one_idle():
                        await self._wait_for_slot()
                    conn = self._idle_for(route)
                    if conn is not None:
                        return conn
                self._open += 1
                conn = Connection(self._loop)
                conn.counted = True
                try:
                    await self._connect(conn, route)
                except BaseException:
                    self.discard(conn)
                    raise
                return conn
        except TimeoutError as exc:
            where = f"{route.host}:{route.port}"
            raise TransportTimeout(f"no connection to {where} in {wait_s:g} s") from exc

    def release(self, conn: Connection, route: _Route) -> None:
        """Keep ``conn`` for the next call to the same place."""
        now = self._loop.time()
        if self.closed or conn.closed:
            self.discard(conn)
            return
        conn.idle_since = now
        self._idle.setdefault(route.key, []).append(conn)
        if now - self._swept > self._keepalive:
            self._sweep(now)
        self._wake_one()

    def discard(self, conn: Connection) -> None:
        """Close ``conn`` and free its place in the pool."""
        if not conn.closed:
            conn.abort()
        if conn.counted:
            conn.counted = False
            self._open -= 1
            self._wake_one()

    def _idle_for(self, route: _Route) -> Connection | None:
        idle = self._idle.get(route.key)
        if not idle:
            return None
        now = self._loop.time()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be stale
            if not conn.closed and now - conn.idle_since < self._keepalive:
                return conn
            self.discard(conn)
        return None

    def _close_one_idle(self) -> bool:
        for conns in self._idle.values():
            if conns:
                self.discard(conns.pop(0))
                return True
        return False

    async def _wait_for_slot(self) -> None:
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if not waiter.done():
                waiter.cancel()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self, now: float) -> None:
        self._swept = now
        for conns in self._idle.values():
            keep = [c for c in conns if not c.closed and now - c.idle_since < self._keepalive]
            for conn in conns:
                if conn not in keep:
                    self.discard(conn)
            conns[:] = keep

    async def _connect(self, conn: Connection, route: _Route) -> None:
        try:
            if route.tunnel is None:
                tls = self._ssl if route.tls_hostname else None
                name = route.tls_hostname
                await self._loop.create_connection(
                    lambda: conn, route.host, route.port, ssl=tls, server_hostname=name
                )
                return
            await self._loop.create_connection(lambda: conn, route.host, route.port)
            status = await conn.open_tunnel(route.tunnel)
            if status.split(b" ")[1:2] != [b"200"]:
                raise TransportError(f"the proxy refused the tunnel: {status.decode('latin-1')}")
            assert conn.transport is not None
            transport = await self._loop.start_tls(
                conn.transport, conn, self._ssl, server_hostname=route.tls_hostname
            )
            conn.transport = cast("asyncio.Transport", transport)
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise TransportError(f"cannot connect to {route.host}:{route.port}: {exc}") from exc


class Call:
    """One request in flight: ``async with`` gives its :class:`Response` once headers are in."""

    __slots__ = ("_client", "_conn", "_data", "_headers", "_response", "_route", "_timeout")

    def __init__(
        self,
        client: UpstreamClient,
        route: _Route,
        *,
        data: bytes | bytearray,
        headers: Mapping[str, str],
        timeout: float,
    ) -> None:
        self._client = client
        self._route = route
        self._data = data
        self._headers = headers
        self._timeout = timeout
        self._conn: Connection | None = None
        self._response: Response | None = None

    async def __aenter__(self) -> Response:
        head = _request_head(self._route, self._data, self._headers)
        conn = await self._client.acquire(self._route, self._timeout)
        try:
            response = conn.send(head, self._data, self._timeout)
            await response.wait_headers()
        except BaseException:
            conn.done_with()
            self._client.discard(conn)
            raise
        self._conn, self._response = conn, response
        return response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, response = self._conn, self._response
        if conn is None or response is None:
            return
        self._conn = self._response = None
        conn.done_with()
        if exc_type is None and response.complete and conn.keep_alive and not conn.closed:
            self._client.release(conn, self._route)
        else:
            self._client.discard(conn)
