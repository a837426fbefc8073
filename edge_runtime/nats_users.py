"""NATS users and subject permissions: what each role of the mesh may publish and subscribe.

The one source of the permissions every NATS server we ship enforces: ``nats/permissions.conf``
is generated from :func:`permissions_conf` (``scripts/nats-permissions``; a test fails when it
is stale), ``nats/auth.conf``, ``nats/server.conf`` (Compose), ``nats/cluster.conf`` and the
Kubernetes values include it, and ``llm-edge up --cluster`` writes its servers' users with
:func:`authorization_block`. Passwords are never written into a file: a user's password is a
variable (``$LLM_EDGE_BROKER_PASSWORD``) that nats-server reads from its environment, and a
server whose environment lacks one refuses to start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ADMIN",
    "BRIDGE",
    "BROKER",
    "SHIPPED_ROLES",
    "NatsUser",
    "Permissions",
    "authorization_block",
    "password_variable",
    "permissions_conf",
    "permissions_variable",
    "producer",
    "worker",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Permissions:
    """One user's subject permissions (``allow`` lists; everything else is denied).

    Attributes:
        publish: subjects the user may publish to.
        subscribe: subjects the user may subscribe to.
        allow_responses: the user may also publish to the reply subject of a request it
            received (and only to that), as NATS's ``allow_responses``.
    """

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False

    def conf(self, indent: str = "  ") -> str:
        """The permissions as a nats-server configuration map."""
        lines = [
            "{",
            f"{indent}publish:   {{ allow: {_strings(self.publish)} }}",
            f"{indent}subscribe: {{ allow: {_strings(self.subscribe)} }}",
        ]
        if self.allow_responses:
            lines.append(f"{indent}allow_responses: true")
        return "\n".join(lines) + "\n}"


#: The Responses API's subjects a producer sends to: create, get, delete, cancel, input items.
_RESPONSES = (
    "llm.responses",
    "llm.responses.get",
    "llm.responses.delete",
    "llm.responses.cancel",
    "llm.responses.input_items",
)

#: Brokers: consume the request subjects, call provider workers, answer anyone; JetStream
#: for the batch engine, the NATS KV L2, the object store (whose files it reads with ordered
#: consumers: they answer JetStream's flow control, ``$JS.FC``) and the shares of deployments'
#: limits; tell each other their deployments' statistics (``llm.admission.>``); the audit trail
#: of admin actions (``llm.audit.record``, into its stream).
BROKER = Permissions(
    publish=(
        "llm.provider.>",
        "llm.admission.>",
        "llm.batch.events.>",
        "_INBOX.>",
        "$JS.API.>",
        "$KV.>",
        "$O.>",
        "llm.batch.line.>",
        "$JS.ACK.>",
        "$JS.FC.>",
        "llm.audit.>",
        "llm.responses.job",
        "llm.responses.halt",
        "llm.responses.events.>",
    ),
    subscribe=(
        "llm.chat",
        "llm.messages",
        "llm.messages.count_tokens",
        "llm.embeddings",
        *_RESPONSES,
        "llm.responses.halt",
        "llm.tenant.*.chat",
        "llm.tenant.*.messages",
        "llm.tenant.*.messages.count_tokens",
        "llm.tenant.*.embeddings",
        "llm.tenant.*.responses",
        "llm.models",
        "llm.broker.ping",
        "llm.cancel",
        "llm.admin.>",
        "llm.batch.>",
        "_INBOX.>",
        "$SRV.>",
        "llm.status.broker",
        "llm.admission.>",
    ),
)

#: The HTTP bridge: a producer that also reaches files and batches (inbox ``_INBOX.bridge``).
#: It answers ``$SRV`` and ``llm.status.bridge`` on the caller's reply subject only.
BRIDGE = Permissions(
    publish=(
        "llm.chat",
        "llm.messages",
        "llm.messages.count_tokens",
        "llm.embeddings",
        *_RESPONSES,
        "llm.models",
        "llm.broker.ping",
        "llm.cancel",
        "llm.batch.>",
        "$JS.API.>",
        "$O.>",
    ),
    subscribe=("_INBOX.bridge.>", "$SRV.>", "llm.status.bridge"),
    allow_responses=True,
)

#: Operators: the admin commands (``llm.admin.>``), discovery (``$SRV``, ``llm.status``) and
#: batches (inbox ``_INBOX.admin``). Brokers configured with admin keys also want an admin
#: key on every admin command: this identity alone is not enough there.
ADMIN = Permissions(
    publish=(
        "llm.admin.>",
        "$SRV.>",
        "llm.status.>",
        "llm.broker.ping",
        "llm.models",
        "llm.batch.>",
        "$JS.API.>",
        "$O.>",
    ),
    subscribe=("_INBOX.admin.>", "llm.batch.events.>"),
)

_ONCE_BUCKET = "KV_llm_edge_once"
_FILES = "OBJ_llm_edge_files"


def worker(provider: str) -> Permissions:
    """A provider's workers: consume their own subjects (chat, and embeddings for the
    providers that compute them, the Batch API calls of those whose adapter has one, and
    reads and cancels of the background responses an upstream runs itself),
    answer the broker, claim idempotent calls in the ``llm_edge_once`` bucket, and read a
    sub-batch's lines from and write its results to the files bucket (inbox
    ``_INBOX.worker-<provider>``)."""
    return Permissions(
        publish=(
            "_INBOX.>",
            f"$JS.API.STREAM.INFO.{_ONCE_BUCKET}",
            f"$JS.API.STREAM.MSG.GET.{_ONCE_BUCKET}",
            f"$JS.API.DIRECT.GET.{_ONCE_BUCKET}.>",
            "$KV.llm_edge_once.>",
            "llm.once.>",
            f"$JS.API.STREAM.INFO.{_FILES}",
            # nats-py's object store get finds the bucket's stream by its chunks' subject
            "$JS.API.STREAM.NAMES",
            f"$JS.API.STREAM.MSG.GET.{_FILES}",
            f"$JS.API.STREAM.PURGE.{_FILES}",
            f"$JS.API.DIRECT.GET.{_FILES}.>",
            f"$JS.API.CONSUMER.CREATE.{_FILES}",
            f"$JS.API.CONSUMER.CREATE.{_FILES}.>",
            f"$JS.API.CONSUMER.DELETE.{_FILES}.>",
            "$O.llm_edge_files.>",
            "$JS.FC.>",
        ),
        subscribe=(
            f"llm.provider.{provider}",
            f"llm.provider.{provider}.embeddings",
            f"llm.provider.{provider}.batch",
            f"llm.provider.{provider}.responses",
            "llm.cancel",
            "$SRV.>",
            f"llm.status.worker-{provider}",
            f"_INBOX.worker-{provider}.>",
            f"llm.once.{provider}.>",
        ),
    )


def producer(user: str, tenant: str | None = None) -> Permissions:
    """A producer: send requests and batches, read its batch files through the brokers
    (``llm.batch.file.*``, which answer only the file's tenant; no JetStream permission), read
    only its own replies (``_INBOX.<user>``) and its ``tenant``'s batch events
    (``llm.batch.events.<tenant>.>``; ``None``: every tenant's, for a producer whose keys span
    tenants)."""
    events = f"llm.batch.events.{tenant}.>" if tenant else "llm.batch.events.>"
    return Permissions(
        publish=(
            "llm.chat",
            "llm.messages",
            "llm.messages.count_tokens",
            "llm.embeddings",
            *_RESPONSES,
            "llm.cancel",
            "llm.batch.submit",
            "llm.batch.get",
            "llm.batch.list",
            "llm.batch.cancel",
            "llm.batch.whoami",
            "llm.batch.file.get",
            "llm.batch.file.content",
        ),
        subscribe=(f"_INBOX.{user}.>", events),
    )


#: The roles ``nats/permissions.conf`` defines, by user name: the users every configuration
#: we ship has (each with its password variable, :func:`password_variable`).
SHIPPED_ROLES: dict[str, Permissions] = {
    "broker": BROKER,
    "worker-openai": worker("openai"),
    "worker-mock": worker("mock"),
    "bridge": BRIDGE,
    "admin": ADMIN,
}


def password_variable(user: str) -> str:
    """The environment variable holding ``user``'s password: ``LLM_EDGE_<USER>_PASSWORD``."""
    return f"LLM_EDGE_{user.upper().replace('-', '_')}_PASSWORD"


def permissions_variable(user: str) -> str:
    """The configuration variable ``nats/permissions.conf`` gives ``user``'s permissions."""
    return f"{user.upper().replace('-', '_')}_PERMISSIONS"


def permissions_conf() -> str:
    """The text of ``nats/permissions.conf``: one variable per shipped role."""
    parts = [
        "# Generated by scripts/nats-permissions from edge_runtime/nats_users.py: edit that,",
        "# then regenerate (a test fails when this file is stale). Included by auth.conf,",
        "# server.conf and cluster.conf; each user's entry names its variable:",
        "#   { user: broker, password: $LLM_EDGE_BROKER_PASSWORD,",
        "#     permissions: $BROKER_PERMISSIONS }",
    ]
    for user, permissions in SHIPPED_ROLES.items():
        parts.append(f"\n{permissions_variable(user)} = {permissions.conf()}")
    return "\n".join(parts) + "\n"


@dataclass(frozen=True, slots=True)
class NatsUser:
    """A user of a generated configuration: its name, password variable and permissions
    (``None``: no restriction, for the services ``up`` runs together in one process)."""

    name: str
    permissions: Permissions | None


def authorization_block(users: Iterable[NatsUser]) -> str:
    """An ``authorization`` block with these users, each password read from the server's
    environment (:func:`password_variable`); no user is anonymous."""
    lines = ["authorization {", "  users: ["]
    for user in users:
        entry = f"    {{ user: {_quoted(user.name)}, password: ${password_variable(user.name)}"
        if user.permissions is not None:
            body = user.permissions.conf(indent="        ").replace("\n}", "\n      }")
            entry += f", permissions: {body}"
        lines.append(entry + " }")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def _strings(subjects: Iterable[str]) -> str:
    return "[" + ", ".join(_quoted(s) for s in subjects) + "]"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
