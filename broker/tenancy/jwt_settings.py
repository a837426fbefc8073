"""The ``[auth.jwt]`` table: which issuer's tokens the broker accepts, and how their claims
map to a tenant, the admin role, model access and limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_runtime.tables import check_keys, field_names

__all__ = ["ASYMMETRIC_ALGORITHMS", "JwtSettings"]

#: The algorithms a token may be signed with: public-key ones only. ``none`` and the HMAC
#: family (``HS256`` …) are never accepted: an HMAC "key" taken from a public JWKS would let
#: anyone sign.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: The largest clock skew ``leeway_s`` may forgive.
MAX_LEEWAY_S = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtSettings:
    """One trusted issuer.

    Attributes:
        issuer: the ``iss`` every token must carry.
        audience: accepted ``aud`` values (a token must name one of them).
        jwks_url, jwks_file: where the issuer's public keys are (exactly one).
        algorithms: the allowed ``alg`` values (a subset of :data:`ASYMMETRIC_ALGORITHMS`).
        leeway_s: clock skew forgiven on ``exp``, ``nbf`` and ``iat``.
        jwks_timeout_s: bound on one JWKS load.
        jwks_refresh_s: how often the keys are read again.
        jwks_min_refresh_s: the least time between two loads caused by unknown ``kid``s.
        tenant_claim: the claim naming the tenant (required in every token).
        roles_claim, admin_role: a token whose roles (a list, or a space-separated string)
            hold ``admin_role`` opens the operator console.
        models_claim: the claim with the caller's model list (optional).
        limits_claim: the claim with the caller's own ``rpm``, ``tpm``, ``budget_usd``,
            ``budget_period`` (optional; counted per ``sub``).
        unconfigured_tenants: accept tokens naming a tenant the configuration lacks (it gets
            the defaults); otherwise they are refused with 403.
        cache_entries, cache_ttl_s: the verified-token cache: its bound, and how long a
            verified token is trusted without a second look (never past its ``exp``).
    """

    issuer: str
    audience: tuple[str, ...]
    jwks_url: str | None = None
    jwks_file: str | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway_s: int = 30
    jwks_timeout_s: float = 2.0
    jwks_refresh_s: float = 600.0
    jwks_min_refresh_s: float = 10.0
    tenant_claim: str = "tenant"
    roles_claim: str = "roles"
    admin_role: str = "llm-edge-admin"
    models_claim: str = "models"
    limits_claim: str = "llm_edge_limits"
    unconfigured_tenants: bool = False
    cache_entries: int = 4096
    cache_ttl_s: float = 60.0

    @property
    def jwks_path(self) -> Path | None:
        """``jwks_file`` as a path."""
        return Path(self.jwks_file) if self.jwks_file is not None else None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> JwtSettings:
        """Parse and validate ``[auth.jwt]``; raises ``ValueError`` naming the key."""
        if not isinstance(raw, Mapping):
            raise ValueError("auth.jwt must be a table")  # noqa: TRY004
        check_keys("auth.jwt", raw, field_names(cls))
        where = "auth.jwt"
        issuer = raw.get("issuer")
        if not isinstance(issuer, str) or not issuer:
            raise ValueError(f"{where}.issuer is required (the `iss` of accepted tokens)")
        audience = raw.get("audience")
        audiences = (audience,) if isinstance(audience, str) else audience
        if (
            not isinstance(audiences, list | tuple)
            or not audiences
            or not all(isinstance(a, str) and a for a in audiences)
        ):
            raise ValueError(f"{where}.audience is required: a string or a list of strings")
        url, file = raw.get("jwks_url"), raw.get("jwks_file")
        if (url is None) == (file is None):
            raise ValueError(f"{where}: give jwks_url or jwks_file (one of them)")
        if url is not None and (
            not isinstance(url, str) or urlsplit(url).scheme not in {"https", "http"}
        ):
            raise ValueError(f"{where}.jwks_url must be an https:// (or http://) URL")
        if file is not None and not isinstance(file, str):
            raise ValueError(f"{where}.jwks_file must be a path")
        settings = cls(
            issuer=issuer,
            audience=tuple(audiences),
            jwks_url=url,
            jwks_file=file,
            **{k: _typed(k, raw[k]) for k in _SCALARS if k in raw},
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values out of range; raises ``ValueError`` naming the key."""
        where = "auth.jwt"
        bad = sorted(set(self.algorithms) - ASYMMETRIC_ALGORITHMS)
        if bad or not self.algorithms:
            raise ValueError(
                f"{where}.algorithms: {bad or 'empty'} refused; allowed: "
                f"{sorted(ASYMMETRIC_ALGORITHMS)} (never none or HS*)"
            )
        if not 0 <= self.leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"{where}.leeway_s must be from 0 to {MAX_LEEWAY_S}")
        if min(self.jwks_timeout_s, self.jwks_refresh_s, self.cache_ttl_s) <= 0:
            raise ValueError(f"{where}: jwks_timeout_s, jwks_refresh_s, cache_ttl_s must be > 0")
        if self.jwks_min_refresh_s < 0 or self.cache_entries < 1:
            raise ValueError(f"{where}: jwks_min_refresh_s >= 0 and cache_entries >= 1")
        for name in ("tenant_claim", "roles_claim", "admin_role", "models_claim", "limits_claim"):
            if not getattr(self, name):
                raise ValueError(f"{where}.{name} must not be empty")


#: The scalar keys and their types (TOML writes ``5`` where a float is meant).
_SCALARS: dict[str, type] = {
    "leeway_s": int,
    "jwks_timeout_s": float,
    "jwks_refresh_s": float,
    "jwks_min_refresh_s": float,
    "tenant_claim": str,
    "roles_claim": str,
    "admin_role": str,
    "models_claim": str,
    "limits_claim": str,
    "unconfigured_tenants": bool,
    "cache_entries": int,
    "cache_ttl_s": float,
    "algorithms": tuple,
}


def _typed(name: str, value: object) -> Any:
    kind = _SCALARS[name]
    if kind is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"auth.jwt.{name} must be a list of strings")
        return tuple(value)
    if kind is bool or kind is str:
        if not isinstance(value, kind):
            raise ValueError(f"auth.jwt.{name} must be a {kind.__name__}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"auth.jwt.{name} must be a number")  # noqa: TRY004  (config: ValueError)
    if kind is int and value != int(value):
        raise ValueError(f"auth.jwt.{name} must be an integer")
    return kind(value)
