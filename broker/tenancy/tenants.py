"""Tenants and API keys, and who a request comes from.

Keys are never stored, only their SHA-256 (keys are long random strings, so a fast hash is
enough). Static keys come from the configuration (``[tenants.<name>] keys = ["sha256:..."]``);
keys created at run time live in Redis (``llm-edge keys create``), and each broker reads a
snapshot of them every few seconds, so a request's key check never waits on the network.
A key may carry a :class:`~broker.tenancy.grants.Grant` (its own model list and limits under
its tenant's): a table in the configuration's ``keys`` list, a JSON object as the Redis
value (a bare tenant name is a key without one).

With ``[auth.jwt]`` a bearer JWT of the configured issuer is a caller too
(:mod:`broker.tenancy.jwt`, imported only then); a bearer that is not shaped like a JWT
never reaches it, so API keys pay nothing for it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from broker.errors import BrokerError, KeysUnavailable, ModelNotAllowed, Unauthorized
from broker.tenancy.grants import (
    EVERY_MODEL,
    Grant,
    ModelPatterns,
    check_grant_keys,
    grant_id,
    is_key_hash,
    parse_run_time_value,
)
from broker.tenancy.pii import PiiMode
from edge_runtime.tables import check_keys, field_names
from schemas import headers, subjects

__all__ = [
    "ANONYMOUS",
    "KEY_PREFIX",
    "Caller",
    "KeyRing",
    "KeysNeeded",
    "TenantConfig",
    "TokenVerifier",
    "hash_key",
    "looks_like_jwt",
    "new_key",
    "presented_hash",
]

KEY_PREFIX = "sk-le-"
REDIS_KEYS = "llm-edge:keys"
log = logging.getLogger("llm_edge.broker")


def new_key() -> str:
    """A fresh API key (shown once; only its hash is kept)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """``sha256:<hex>`` of a key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def looks_like_jwt(credential: str) -> bool:
    """Whether a bearer credential is shaped like a compact JWS (``eyJ….….…``); API keys
    (``sk-le-…``, URL-safe base64 without dots) never are, so they pay this test only."""
    return credential.startswith("eyJ") and credential.count(".") == 2


class KeysNeeded(Exception):
    """A JWT names a signing key (``kid``) this broker does not hold: refresh, then ask
    again (:meth:`KeyRing.identify_fetching`)."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"no key {kid!r} held")
        self.kid = kid


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
        weight: the tenant's share, relative to the other tenants waiting in the same class,
            of batch line slots and of capacity its requests wait for (a deployment's, a
            broker's ``max_in_flight``).
        max_priority: the highest ``Llm-Priority`` its requests and batches may ask for
            (``high``, ``normal``, ``low``; for requests also ``interactive``, ``default``,
            ``background``, the same ranks); a higher one is lowered to it. Kept in the batch
            words.
        default_priority: the class of its requests that name none (capped by
            ``max_priority``).
        models: the models its callers may ask for (empty: every model).
        key_grants: ``(key hash, grant)`` of the keys given as tables, with their own
            model list and limits.
        batch_offload: ``auto`` or ``never``: whether its batches may run on the
            providers' own Batch APIs (unset: ``[batch] offload`` decides).
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
    default_priority: str = "normal"
    models: ModelPatterns = EVERY_MODEL
    key_grants: tuple[tuple[str, Grant], ...] = ()
    batch_offload: str | None = None

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
        check_keys(f"tenants.{name}", raw, field_names(cls) - {"name", "key_grants"})
        keys, tables = _key_entries(name, raw.get("keys", []))
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
            max_priority=_priority_word(name, "max_priority", raw),
            default_priority=_priority_word(name, "default_priority", raw),
            models=ModelPatterns.parse(f"tenants.{name}.models", raw.get("models", [])),
            batch_offload=raw.get("batch_offload"),
        )
        if tenant.batch_offload not in {None, "auto", "never"}:
            raise ValueError(f"tenants.{name}.batch_offload must be auto or never")
        for flag in ("pii_restore", "admin"):
            if not isinstance(getattr(tenant, flag), bool):
                raise ValueError(f"tenants.{name}.{flag} must be true or false")  # noqa: TRY004
        if tenant.pii_restore and tenant.pii is not PiiMode.REDACT:
            raise ValueError(f'tenants.{name}.pii_restore needs pii = "redact"')
        if isinstance(tenant.weight, bool) or not isinstance(tenant.weight, int | float):
            raise ValueError(f"tenants.{name}.weight must be a number")  # noqa: TRY004
        if not 0 < tenant.weight <= 1000:
            raise ValueError(f"tenants.{name}.weight must be > 0 and <= 1000")
        if tenant.budget_period not in {"day", "month"}:
            raise ValueError(f"tenants.{name}.budget_period must be day or month")
        if tenant.budget_usd is not None and tenant.budget_usd < 0:
            raise ValueError(f"tenants.{name}.budget_usd must be >= 0")
        if any(
            v is not None and (not isinstance(v, int) or v < 1) for v in (tenant.rpm, tenant.tpm)
        ):
            raise ValueError(f"tenants.{name}: rpm and tpm must be positive integers")
        grants = []
        for i, (key_hash, table) in enumerate(tables):
            grant = Grant.from_mapping(f"tenants.{name}.keys[{i}]", grant_id(key_hash), table)
            grant.within(f"tenants.{name}.keys[{i}]", tenant)
            grants.append((key_hash, grant))
        return replace(tenant, key_grants=tuple(grants)) if grants else tenant


def _key_entries(
    tenant: str, raw: object
) -> tuple[tuple[str, ...], list[tuple[str, Mapping[str, Any]]]]:
    """The key hashes of a ``keys`` list, and the entries given as tables (with a grant).

    Raises:
        ValueError: an entry is neither a hash nor a table with one.
    """
    refusal = f"tenants.{tenant}.keys: store hashes (`llm-edge keys hash KEY`), never keys"
    if not isinstance(raw, list):
        raise ValueError(refusal)  # noqa: TRY004
    hashes: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for i, entry in enumerate(raw):
        if isinstance(entry, dict):
            check_grant_keys(f"tenants.{tenant}.keys[{i}]", entry, "hash")
            key_hash = entry.get("hash")
            if not is_key_hash(key_hash):
                raise ValueError(f"tenants.{tenant}.keys[{i}].hash: {refusal}")
            tables.append((str(key_hash), entry))
        elif not is_key_hash(entry):
            raise ValueError(refusal)
        hashes.append(str(entry["hash"] if isinstance(entry, dict) else entry))
    return tuple(hashes), tables


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request comes from.

    Attributes:
        tenant: whose limits, budget, PII mode and cache namespace apply.
        grant: the key's own narrower governance, if it has any.
        admin: the caller opens the operator console.
    """

    tenant: TenantConfig
    grant: Grant | None = None
    admin: bool = False

    def check_model(self, asked: str, names: Iterable[str]) -> None:
        """Refuse a model outside the tenant's or the key's list.

        Args:
            asked: the name the request used (the refusal names it).
            names: every name of the model it resolves to (or just ``asked``).

        Raises:
            ModelNotAllowed: 403 naming the model.
        """
        grant = self.grant
        tenant_models = self.tenant.models
        if (not tenant_models or tenant_models.allows(names)) and (
            grant is None or grant.models.allows(names)
        ):
            return
        whose = "tenant" if tenant_models and not tenant_models.allows(names) else "key"
        raise ModelNotAllowed(f"This {whose} may not use the model `{asked}`.", param="model")


class TokenVerifier(Protocol):
    """Bearer tokens turned into callers (:class:`broker.tenancy.jwt.JwtVerifier`, built
    only with ``[auth.jwt]``: joserfc costs ~100 ms of start-up to import)."""

    def identify(self, token: str) -> Caller:
        """The caller, without waiting (raises :class:`KeysNeeded` when it would)."""
        ...

    async def identify_fetching(self, token: str) -> Caller:
        """The caller, loading the issuer's keys first if the token needs them."""
        ...


def _priority_word(tenant: str, key: str, raw: Mapping[str, Any]) -> str:
    """The priority word of ``raw[key]`` in the batch words (``interactive`` is ``high`` ...).

    Raises:
        ValueError: it is not a priority word.
    """
    value = raw.get(key, "normal")
    rank = headers.priority_rank(value) if isinstance(value, str) else None
    if rank is None:
        raise ValueError(
            f"tenants.{tenant}.{key} must be high, normal or low (or interactive, default, "
            "background)"
        )
    return headers.PRIORITIES[rank]


#: Seconds a caller refused for unreadable keys waits (the keys are read again every 5 s).
KEYS_RETRY_AFTER_S = 5.0
#: The tenant of requests when no keys are configured (the broker runs open).
ANONYMOUS = TenantConfig(name=subjects.DEFAULT_TENANT)


@dataclass
class KeyRing:
    """Who a request comes from: the configuration's keys, a Redis snapshot of the run-time
    keys, and (with ``[auth.jwt]``) the issuer's tokens."""

    tenants: Mapping[str, TenantConfig]
    required: bool = False
    console_keys: frozenset[str] = frozenset()
    #: The run-time keys are kept in Redis and have not been read yet: whether keys are
    #: required is unknown, so a key the configuration does not know is refused with 503
    #: (fail closed), never served as an open broker would.
    unknown: bool = False
    jwt: TokenVerifier | None = None
    _static: dict[str, Caller] = field(default_factory=dict)
    _dynamic: dict[str, Caller] = field(default_factory=dict)
    _anonymous: Caller = field(default_factory=lambda: Caller(ANONYMOUS))

    def __post_init__(self) -> None:
        for tenant in self.tenants.values():
            grants = dict(tenant.key_grants)
            for key_hash in tenant.keys:
                self._static[key_hash] = Caller(tenant, grants.get(key_hash), tenant.admin)
        self.required = self.required or bool(self._static) or self.jwt is not None

    def load_snapshot(self, snapshot: Mapping[str, str]) -> None:
        """Replace the run-time keys: ``{key hash: tenant name or JSON}`` from Redis (a value
        that does not parse leaves its key out: refused, never served with less governance)."""
        dynamic = {}
        for key_hash, value in snapshot.items():
            try:
                tenant_name, grant = parse_run_time_value(key_hash, value)
            except ValueError as exc:
                log.warning("run-time key %s… left out: %s", key_hash[:19], exc)
                continue
            tenant = self.named(tenant_name)
            dynamic[key_hash] = Caller(tenant, grant, tenant.admin)
        self._dynamic = dynamic
        self.required = self.required or bool(self._dynamic)
        self.unknown = False

    def named(self, name: str) -> TenantConfig:
        """The tenant called ``name`` (a tenant known only from run-time keys has defaults)."""
        if name == ANONYMOUS.name and name not in self.tenants:
            return ANONYMOUS
        return self.tenants.get(name) or TenantConfig(name=name)

    def identify(self, authorization: str | None) -> Caller:
        """The caller of an ``Authorization`` value, without waiting.

        Raises:
            KeysNeeded: a JWT whose signing key is not held yet (see :meth:`identify_fetching`).
            KeysUnavailable: the run-time keys were never read, and the configuration does
                not know this key (503 with ``Retry-After``).
            Unauthorized: keys are required and this is not one of them (or a JWT that
                fails a check: ``InvalidToken``).
            Forbidden: a valid JWT naming a tenant the configuration lacks.
        """
        if not self.required and not self.unknown:
            return self._anonymous
        caller = None
        if authorization:
            credential = _bearer(authorization)
            if self.jwt is not None and looks_like_jwt(credential):
                return self.jwt.identify(credential)
            key_hash = hash_key(credential)
            caller = self._static.get(key_hash) or self._dynamic.get(key_hash)
        if self.unknown and (caller is None or not self.required):
            raise KeysUnavailable(
                "the API keys could not be read from Redis yet; retry shortly",
                retry_after=KEYS_RETRY_AFTER_S,
            )
        if caller is None:
            raise Unauthorized("Incorrect or missing API key: send `Authorization: Bearer <key>`.")
        return caller

    async def identify_fetching(self, authorization: str | None) -> Caller:
        """As :meth:`identify`, loading the JWT issuer's keys first when a token needs them
        (bounded; 503 ``keys_unavailable`` when they cannot be read)."""
        try:
            return self.identify(authorization)
        except KeysNeeded:
            assert self.jwt is not None
            assert authorization is not None
            return await self.jwt.identify_fetching(_bearer(authorization))

    def authenticate(self, authorization: str | None) -> TenantConfig:
        """The tenant of an ``Authorization`` value (:meth:`identify` raises the same)."""
        return self.identify(authorization).tenant

    def is_admin(self, authorization: str | None) -> bool:
        """Whether ``Authorization: Bearer <key>`` opens the operator console: a
        ``[console] keys`` hash, or a key of a tenant with ``admin = true`` (or a JWT with
        the admin role; one whose signing key is not held yet is not, until
        :meth:`admin` has fetched it)."""
        if not authorization:
            return False
        if hash_key(_bearer(authorization)) in self.console_keys:
            return True
        if not self.required:
            return False
        try:
            return self.identify(authorization).admin
        except (BrokerError, KeysNeeded):
            return False

    async def admin(self, authorization: str | None) -> bool:
        """As :meth:`is_admin`, fetching a JWT issuer's keys when needed."""
        if self.is_admin(authorization):
            return True
        if not authorization or self.jwt is None or not looks_like_jwt(_bearer(authorization)):
            return False
        try:
            return (await self.identify_fetching(authorization)).admin
        except BrokerError:
            return False

    def tenant_for(self, authorization: str | None) -> TenantConfig | None:
        """The tenant of an ``Authorization: Bearer <key>`` value; ``None`` when it is not a
        known key (and keys are required). Without any keys, everyone is ``default``."""
        if not self.required:
            return ANONYMOUS
        if not authorization:
            return None
        caller = self._lookup(_bearer(authorization))
        return caller.tenant if caller is not None else None

    def _lookup(self, credential: str) -> Caller | None:
        if not credential:
            return None
        key_hash = hash_key(credential)
        return self._static.get(key_hash) or self._dynamic.get(key_hash)


def presented_hash(authorization: str) -> str:
    """``sha256:<hex>`` of the key an ``Authorization`` value presents."""
    return hash_key(_bearer(authorization))


def _bearer(authorization: str) -> str:
    """The key of an ``Authorization`` value (``Bearer`` is optional)."""
    key = authorization[7:] if authorization[:7].lower() == "bearer " else authorization
    return key.strip()
