"""Who may run an admin command: the brokers' own check behind the NATS permissions.

NATS permissions decide which identities may publish ``llm.admin.>`` (``nats/permissions.conf``
gives it to ``admin`` only). A broker configured with admin keys (``[console] keys``, or a
tenant with ``admin = true``) also wants one of them on every admin command, as
``Authorization: Bearer <key>``: a leaked or over-broad NATS identity alone cannot mint keys,
force breakers, purge caches or cancel batches. Without admin keys there is nothing to check
against, and the NATS permissions alone decide (``llm-edge up`` warns about it at start).

``llm.admin.authorize`` is the one admin subject left unchecked: it is the question "is this
key an admin key?" that the console asks before it asks anything else.
"""

from __future__ import annotations

from broker.tenancy.tenants import KeyRing

__all__ = ["AdminRefused", "admin_keys_configured", "require_admin"]


class AdminRefused(Exception):
    """An admin command refused for its caller (``status`` 401 without a key, 403 with one
    that is not an admin key)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def admin_keys_configured(keys: KeyRing) -> bool:
    """Whether any key can be an admin key: console keys, a tenant with ``admin = true``
    (whose keys may also be run-time ones), or a JWT issuer (whose tokens may carry the
    admin role)."""
    return (
        bool(keys.console_keys)
        or any(t.admin for t in keys.tenants.values())
        or keys.jwt is not None
    )


def require_admin(keys: KeyRing, authorization: str | None) -> None:
    """Let an admin command through, or refuse it.

    Args:
        keys: the broker's key ring.
        authorization: the command's ``Authorization`` header, if any.

    Raises:
        AdminRefused: admin keys are configured and this is not one (401 without a key, 403
            with another).
    """
    if not admin_keys_configured(keys):
        return
    if not authorization:
        raise AdminRefused(
            401,
            "unauthorized",
            "admin commands need an admin key: send `Authorization: Bearer <key>` "
            "(llm-edge: LLM_EDGE_ADMIN_KEY)",
        )
    if not keys.is_admin(authorization):
        raise AdminRefused(403, "forbidden", "this key is not an admin key")
