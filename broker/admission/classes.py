"""Priority classes: which requests go first when capacity is short.

``Llm-Priority: interactive | default | background`` on a request (or ``high | normal |
low``, the batch words of the same ranks) picks its class; without it, its key's
``priority`` or else its tenant's ``default_priority``. Either is capped by the tenant's
``max_priority``: a tenant cannot ask past what the operator gave it. Batch lines wait in a
class of their own, below background: they take the capacity interactive traffic leaves.
"""

from __future__ import annotations

import enum

from broker.errors import InvalidRequest
from broker.tenancy.grants import Grant
from broker.tenancy.tenants import TenantConfig
from schemas import headers

__all__ = ["Priority", "request_priority"]


class Priority(enum.IntEnum):
    """Classes in the order they are served (aging aside)."""

    INTERACTIVE = 0
    DEFAULT = 1
    BACKGROUND = 2
    BATCH = 3

    @property
    def label(self) -> str:
        """The metric label and header word."""
        return self.name.lower()


def request_priority(
    asked: str | None, tenant: TenantConfig, grant: Grant | None = None
) -> Priority:
    """The class of a request of ``tenant`` (through a key with ``grant``) that sent
    ``Llm-Priority: asked``.

    Raises:
        InvalidRequest: ``asked`` is not a priority word.
    """
    if asked is None:
        default = grant.priority if grant is not None and grant.priority else None
        rank = headers.priority_rank(default or tenant.default_priority)
    else:
        rank = headers.priority_rank(asked)
        if rank is None:
            raise InvalidRequest(
                f"{headers.PRIORITY} must be one of {', '.join(headers.PRIORITY_CLASSES)}",
                param=headers.PRIORITY,
            )
    cap = headers.priority_rank(tenant.max_priority)
    return Priority(max(rank or 0, cap or 0))
