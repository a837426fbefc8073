"""What a sender of admin commands says about itself, for the audit trail.

NATS does not tell a subscriber who published a message, so the console (the bridge) and the
CLI say it in headers (:data:`~schemas.headers.ADMIN_VIA` and the others). Brokers record what
they are told; NATS permissions decide who may publish ``llm.admin.>`` at all.
"""

from __future__ import annotations

from nats.aio.client import Client

from schemas import headers

__all__ = ["admin_headers", "connection_label"]


def connection_label(nc: Client) -> str:
    """A connection as the NATS server's monitoring knows it: its name, client id and server
    (``llm-edge-cli cid 12 on n1``)."""
    name = str(nc.options.get("name") or "")
    server = str(nc._server_info.get("server_name", ""))  # nats-py keeps the server's INFO here
    return f"{name} cid {nc.client_id} on {server}".strip()


def admin_headers(
    nc: Client, *, via: str, peer: str, authorization: str | None = None
) -> dict[str, str]:
    """The headers of an admin command: what sent it, from where, over which connection, and
    the caller's ``Authorization`` when it has one."""
    out = {
        headers.ADMIN_VIA: via,
        headers.ADMIN_PEER: peer,
        headers.ADMIN_CLIENT: connection_label(nc),
    }
    if authorization:
        out[headers.AUTHORIZATION] = authorization
    return out
