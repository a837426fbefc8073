"""The credentials of an embedded NATS cluster: its users and its routes' password.

``llm-edge up --cluster N`` runs its servers closed, as the configurations we ship are: every
client names a user (no anonymous one), and a server accepts a route only from user ``route``
with the route password. Passwords are drawn fresh at each start and never written into a
configuration file: each server's file names them as variables (``$LLM_EDGE_ADMIN_PASSWORD``)
that nats-server reads from its environment (:meth:`ClusterAuth.environ`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from edge_runtime.nats_users import NatsUser, authorization_block, password_variable

__all__ = ["ROUTE_USER", "ClusterAuth", "new_password"]

#: The user one server of the cluster authenticates as on another's route port.
ROUTE_USER = "route"
_ROUTE_PASSWORD = "LLM_EDGE_ROUTE_PASSWORD"  # noqa: S105  (a variable's name)


def new_password() -> str:
    """A random password (hex: safe in a URL's user information unquoted)."""
    return secrets.token_hex(24)


@dataclass(frozen=True, slots=True)
class ClusterAuth:
    """Users (with their permissions) and fresh passwords for an embedded cluster.

    Args:
        users: who may connect; none is anonymous.
        passwords: each user's password (drawn with :func:`new_password` when absent).
        route_password: the route user's password.
    """

    users: Sequence[NatsUser]
    passwords: Mapping[str, str] = field(default_factory=dict)
    route_password: str = field(default_factory=new_password)

    def __post_init__(self) -> None:
        drawn = {u.name: self.passwords.get(u.name) or new_password() for u in self.users}
        object.__setattr__(self, "passwords", drawn)

    def url(self, user: str, servers: Sequence[str]) -> str:
        """``nats://user:password@first,second,...``: the server list as ``user`` (the
        credentials on the first entry apply to every server)."""
        first, *rest = servers
        scheme, address = first.split("://", 1)
        creds = f"{quote(user, safe='')}:{quote(self.passwords[user], safe='')}"
        return ",".join([f"{scheme}://{creds}@{address}", *rest])

    def node_conf(self, *, name: str, host: str, route_port: int, size: int) -> str:
        """One server's configuration: the cluster with authenticated routes, and the users."""
        routes = ", ".join(f"$LLM_EDGE_ROUTE_URL_N{i + 1}" for i in range(size))
        cluster = (
            "cluster {\n"
            f'  name: "{name}"\n'
            f'  listen: "{host}:{route_port}"\n'
            f"  authorization {{ user: {ROUTE_USER}, password: ${_ROUTE_PASSWORD} }}\n"
            f"  routes: [{routes}]\n"
            "}\n"
        )
        return cluster + authorization_block(self.users)

    def environ(self, host: str, route_ports: Sequence[int]) -> dict[str, str]:
        """What the servers' configurations read: every password, and each route's URL with
        the route password in it."""
        env = {password_variable(user): pw for user, pw in self.passwords.items()}
        env[_ROUTE_PASSWORD] = self.route_password
        for i, port in enumerate(route_ports):
            env[f"LLM_EDGE_ROUTE_URL_N{i + 1}"] = (
                f"nats://{ROUTE_USER}:{self.route_password}@{host}:{port}"
            )
        return env
