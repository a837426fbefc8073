"""Who may connect to the cluster ``llm-edge up --cluster N`` runs, and how they learn how.

Three users, none anonymous: ``llm-edge``, the services ``up`` itself runs (every role in one
process, or its children: one identity, so no permission narrows it); ``admin``, with the
operators' permissions of ``nats/permissions.conf``; and ``producer``, with a producer's
(requests and batches, replies on ``_INBOX.producer`` only). The services' password stays in
memory (children get it in their environment, never on a command line); the admin's and the
producer's are written to ``admin.env`` and ``producer.env`` beside the servers' stores,
readable by their owner only, for a shell to source.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from edge_runtime.cluster_auth import ClusterAuth
from edge_runtime.nats_users import ADMIN, NatsUser, producer

__all__ = ["CLUSTER_USERS", "SERVICES_USER", "write_user_files"]

SERVICES_USER = "llm-edge"
#: The users of ``up --cluster``'s servers.
CLUSTER_USERS = (
    NatsUser(SERVICES_USER, None),
    NatsUser("admin", ADMIN),
    NatsUser("producer", producer("producer")),
)
#: The users an operator connects as, each with the inbox prefix its permissions allow.
_OUTSIDE = {"admin": "_INBOX.admin", "producer": "_INBOX.producer"}


def write_user_files(auth: ClusterAuth, servers: Sequence[str], directory: Path) -> list[Path]:
    """Write ``<user>.env`` (``NATS_URL`` with the password, ``NATS_INBOX_PREFIX``) for each
    outside user, mode 0600; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for user, inbox in _OUTSIDE.items():
        path = directory / f"{user}.env"
        text = (
            f"# NATS user {user} of `llm-edge up --cluster` (passwords change at each start)\n"
            f"NATS_URL={auth.url(user, servers)}\n"
            f"NATS_INBOX_PREFIX={inbox}\n"
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o600)  # an older file keeps its mode through O_CREAT
        written.append(path)
    return written
