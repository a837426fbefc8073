"""Tenants and API keys.

Keys are never stored, only their SHA-256 (keys are long random strings, so a fast hash is
enough). Static keys come from the configuration (``[tenants.<name>] keys = ["sha256:..."]``);
keys created at run time live in Redis (``llm-edge keys create``), and each broker reads a
snapshot of them every few seconds, so a request's key check never waits on the network.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.errors import KeysUnavailable, Unauthorized
from broker.tenancy.pii import PiiMode
from edge_runtime.tables import check_keys, field_names
from schemas import headers, subjects

__all__ = [
    "ANONYMOUS",
    "KEY_PREFIX",
    "KeyRing",
    "TenantConfig",
    "hash_key",
    "new_key",
    "presented_hash",
]

KEY_PREFIX = "sk-le-"
REDIS_KEYS = "llm-edge:keys"


def new_key() -> str:
    """A fresh API key (shown once; only its hash is kept)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """``sha256:<hex>`` of a key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantConfig:
    """One ``[tenants.<name>]`` table.

    Attributes:
        keys: hashes of the tenant's API keys.
        rpm, tpm: requests and tokens per minute, shared by every broker (Redis).
        pii: ``off``, ``redact`` or ``block``.
        pii_restore: with ``redact``, put the caller's values back into its reply.
        budget_usd: spend cap per ``budget_period`` (``day`` or ``month``), or none.
        admin: the tenant's keys also open the operator console.
        weight: the tenant's share of batch line slots and, when a broker is saturated, of
            its interactive ``max_in_flight``, relative to the other tenants with work.
        max_priority: the highest ``Llm-Priority`` its batches may ask for (``high``,
            ``normal``, ``low``); a higher one is lowered to it.
    """

    name: str
    keys: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    pii: PiiMode = PiiMode.OFF
    pii_restore: bool = False
    budget_usd: float | None = None
    budget_period: str = "month"
    admin: bool = False
    weight: float = 1.0
    max_priority: str = "normal"

    def priority(self, asked: str | None) -> str:
        """The priority a batch of this tenant runs at: ``asked``, capped by ``max_priority``.

        Raises:
            ValueError: ``asked`` is not ``high``, ``normal`` or ``low``.
        """
        asked = (asked or "normal").strip().lower()
        if asked not in headers.PRIORITIES:
            raise ValueError("priority must be high, normal or low")
        order = headers.PRIORITIES
        return order[max(order.index(asked), order.index(self.max_priority))]

    @classmethod
    def from_mapping(cls, name: str, raw: Mapping[str, Any]) -> TenantConfig:
        """Parse and validate; raises ``ValueError`` naming the key."""
        check_keys(f"tenants.{name}", raw, field_names(cls) - {"name"})
        keys = tuple(str(k) for k in raw.get("keys", []))
        if any(not k.startswith("sha256:") or len(k) != 71 for k in keys):
            raise ValueError(
                f"tenants.{name}.keys: store hashes (`llm-edge keys hash KEY`), never keys"
            )
        try:
            pii = PiiMode(raw.get("pii", "off"))
        except ValueError:
            raise ValueError(f"tenants.{name}.pii must be off, redact or block") from None
        budget = raw.get("budget_usd")
        tenant = cls(
            name=name,
            keys=keys,
            rpm=raw.get("rpm"),
            tpm=raw.get("tpm"),
            pii=pii,
            pii_restore=raw.get("pii_restore", False),
            budget_usd=float(budget) if budget is not None else None,
            budget_period=str(raw.get("budget_period", "month")),
            admin=raw.get("admin", False),
            weight=raw.get("weight", 1.0),
            max_priority=str(raw.get("max_priority", "normal")),
        )
        for flag in ("pii_restore", "admin"):
            if not isinstance(getattr(tenant, flag), bool):
                raise ValueError(f"tenants.{name}.{flag} must be true or false")  # noqa: TRY004
        if tenant.pii_restore and tenant.pii is not PiiMode.REDACT:
            raise ValueError(f'tenants.{name}.pii_restore needs pii = "redact"')
        if isinstance(tenant.weight, bool) or not isinstance(tenant.weight, int | float):
            raise ValueError(f"tenants.{name}.weight must be a number")  # noqa: TRY004
        if not 0 < tenant.weight <= 1000:
            raise ValueError(f"tenants.{name}.weight must be > 0 and <= 1000")
        if tenant.max_priority not in headers.PRIORITIES:
            raise ValueError(f"tenants.{name}.max_priority must be high, normal or low")
        if tenant.budget_period not in {"day", "month"}:
            raise ValueError(f"tenants.{name}.budget_period must be day or month")
        if tenant.budget_usd is not None and tenant.budget_usd < 0:
            raise ValueError(f"tenants.{name}.budget_usd must be >= 0")
        if any(
            v is not None and (not isinstance(v, int) or v < 1) for v in (tenant.rpm, tenant.tpm)
        ):
            raise ValueError(f"tenants.{name}: rpm and tpm must be positive integers")
        return tenant


#: Seconds a caller refused for unreadable keys waits (the keys are read again every 5 s).
KEYS_RETRY_AFTER_S = 5.0
#: The tenant of requests when no keys are configured (the broker runs open).
ANONYMOUS = TenantConfig(name=subjects.DEFAULT_TENANT)


@dataclass
class KeyRing:
    """Maps key hashes to tenants: the configuration's, plus a Redis snapshot."""

    tenants: Mapping[str, TenantConfig]
    required: bool = False
    console_keys: frozenset[str] = frozenset()
    #: The run-time keys are kept in Redis and have not been read yet: whether keys are
    #: required is unknown, so a key the configuration does not know is refused with 503
    #: (fail closed), never served as an open broker would.
    unknown: bool = False
    _static: dict[str, TenantConfig] = field(default_factory=dict)
    _dynamic: dict[str, TenantConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for tenant in self.tenants.values():
            for key_hash in tenant.keys:
                self._static[key_hash] = tenant
        self.required = self.required or bool(self._static)

    def load_snapshot(self, snapshot: Mapping[str, str]) -> None:
        """Replace the run-time keys: ``{key hash: tenant name}`` from Redis."""
        self._dynamic = {
            h: self.tenants.get(t) or TenantConfig(name=t) for h, t in snapshot.items()
        }
        self.required = self.required or bool(self._dynamic)
        self.unknown = False

    def named(self, name: str) -> TenantConfig:
        """The tenant called ``name`` (a tenant known only from run-time keys has defaults)."""
        if name == ANONYMOUS.name and name not in self.tenants:
            return ANONYMOUS
        return self.tenants.get(name) or TenantConfig(name=name)

    def authenticate(self, authorization: str | None) -> TenantConfig:
        """The tenant of an ``Authorization`` value.

        Raises:
            KeysUnavailable: the run-time keys were never read, and the configuration does
                not know this key (503 with ``Retry-After``).
            Unauthorized: keys are required and this is not one of them.
        """
        tenant = self.tenant_for(authorization)
        if self.unknown and (tenant is None or not self.required):
            raise KeysUnavailable(
                "the API keys could not be read from Redis yet; retry shortly",
                retry_after=KEYS_RETRY_AFTER_S,
            )
        if tenant is None:
            raise Unauthorized("Incorrect or missing API key: send `Authorization: Bearer <key>`.")
        return tenant

    def is_admin(self, authorization: str | None) -> bool:
        """Whether ``Authorization: Bearer <key>`` opens the operator console: a
        ``[console] keys`` hash, or a key of a tenant with ``admin = true``."""
        if not authorization:
            return False
        if hash_key(_bearer(authorization)) in self.console_keys:
            return True
        if not self.required:
            return False
        tenant = self.tenant_for(authorization)
        return tenant is not None and self.tenants.get(tenant.name, tenant).admin

    def tenant_for(self, authorization: str | None) -> TenantConfig | None:
        """The tenant of an ``Authorization: Bearer <key>`` value; ``None`` when it is not a
        known key (and keys are required). Without any keys, everyone is ``default``."""
        if not self.required:
            return ANONYMOUS
        if not authorization:
            return None
        key_hash = hash_key(_bearer(authorization))
        return self._static.get(key_hash) or self._dynamic.get(key_hash)


def presented_hash(authorization: str) -> str:
    """``sha256:<hex>`` of the key an ``Authorization`` value presents."""
    return hash_key(_bearer(authorization))


def _bearer(authorization: str) -> str:
    """The key of an ``Authorization`` value (``Bearer`` is optional)."""
    key = authorization[7:] if authorization[:7].lower() == "bearer " else authorization
    return key.strip()
