"""NATS server lists: ``nats://a:4222,nats://b:4222`` wherever a NATS URL is taken.

nats-py and FastStream take a *list* of servers, and refuse a comma-separated string
(``nats: invalid connect url option``); operators write one string (a flag, ``NATS_URL``).
:func:`parse_servers` is the one place that turns the string into the list.

Credentials move out of the URLs into connection options: nats-py authenticates with the
credentials of the URL it connects to, so a server learnt from the cluster (its INFO
``connect_urls``, which carry none) would be refused after a failover. Given once, on any
entry, they apply to every server, learnt ones included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["ServerList", "parse_servers"]

_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})


@dataclass(frozen=True, slots=True)
class ServerList:
    """The servers of one NATS connection and the credentials that go with every one.

    Attributes:
        servers: URLs without credentials, in the order given.
        user, password: from ``nats://user:password@host``.
        token: from ``nats://token@host``.
    """

    servers: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    token: str | None = None

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` and FastStream's ``NatsBroker``."""
        options: dict[str, Any] = {"servers": list(self.servers)}
        if self.user is not None:
            options.update(user=self.user, password=self.password)
        if self.token is not None:
            options["token"] = self.token
        return options

    def __str__(self) -> str:
        """The list as an operator writes it, credentials left out (safe to log)."""
        return ",".join(self.servers)


def _credentials(parts: Any) -> tuple[str | None, str | None, str | None]:
    """``(user, password, token)`` of one parsed URL."""
    if parts.username is None:
        return None, None, None
    if parts.password is None:
        return None, None, unquote(parts.username)
    return unquote(parts.username), unquote(parts.password), None


def parse_servers(text: str) -> ServerList:
    """Parse ``nats://a:4222,nats://b:4222`` (one URL is a list of one).

    Entries without a scheme get ``nats://``; every entry must name a host.

    Raises:
        ValueError: an empty list or entry, an unknown scheme, a missing host, websocket
            and plain URLs mixed, or two entries with different credentials.
    """
    entries = [entry.strip() for entry in text.split(",")]
    if not any(entries):
        raise ValueError("no NATS server given")
    servers: list[str] = []
    found: set[tuple[str | None, str | None, str | None]] = set()
    for entry in entries:
        if not entry:
            raise ValueError(f"empty entry in the NATS server list {text!r}")
        url = entry if "://" in entry else f"nats://{entry}"
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ValueError(f"not a NATS server URL: {entry!r} (nats://HOST:PORT)")
        creds = _credentials(parts)
        if creds != (None, None, None):
            found.add(creds)
        host = parts.netloc.rsplit("@", 1)[-1]
        servers.append(f"{parts.scheme}://{host}{parts.path}")
    if len(found) > 1:
        raise ValueError("the NATS server list names different credentials for its servers")
    if len({s.startswith(("ws://", "wss://")) for s in servers}) > 1:
        raise ValueError("a NATS server list cannot mix websocket and plain URLs")
    user, password, token = found.pop() if found else (None, None, None)
    return ServerList(tuple(servers), user=user, password=password, token=token)
