"""Bearer JWTs from one configured issuer: verified, mapped to a :class:`Caller`, cached.

A token is accepted when its ``alg`` is on the allow-list (public-key algorithms only:
``none`` and ``HS*`` never), its signature verifies against the issuer's key with its
``kid`` (:mod:`broker.tenancy.jwks`), its ``iss`` is the issuer, its ``aud`` names one of
the audiences, and ``exp`` / ``nbf`` / ``iat`` hold within ``leeway_s``. Its claims then
name the tenant, the admin role, the model list and the caller's own limits (claim names
are configuration).

Verification is CPU only and synchronous (about 50 us for RS256 with joserfc, which this
module uses: ``bench/jwt_libraries.py`` compares it with PyJWT and authlib); the only wait
is a key refresh, which :meth:`JwtVerifier.identify` signals with :class:`KeysNeeded` and
:meth:`JwtVerifier.identify_fetching` performs. A verified token is kept in a bounded cache
until its ``exp`` or ``cache_ttl_s``, whichever is sooner, so a repeated token costs a dict
lookup.

    KeysNeeded     internal (broker.tenancy.tenants): the token's key is not held; refresh,
                   then ask again
    InvalidToken   401 (broker.errors): the message names the check that failed
    Forbidden      403: a valid token naming a tenant the configuration lacks
    KeysUnavailable 503: no key could be loaded, so no token can be checked (fail closed)
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import msgspec
from joserfc import jws
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError, MissingClaimError
from joserfc.jwt import JWTClaimsRegistry

from broker.errors import Forbidden, InvalidToken, KeysUnavailable
from broker.tenancy.grants import GRANT_FIELDS, Grant, ModelPatterns
from broker.tenancy.jwks import JwksError, KeySource
from broker.tenancy.jwt_settings import JwtSettings
from broker.tenancy.tenants import Caller, KeysNeeded, TenantConfig
from schemas.names import NAME_RULE, is_name

__all__ = ["JwtVerifier", "TokenCache", "claim"]

T = TypeVar("T")
_claims_decoder = msgspec.json.Decoder(dict[str, Any])
#: ``Retry-After`` of a refusal while the issuer's keys cannot be read.
KEYS_RETRY_AFTER_S = 5.0


class TokenCache(Generic[T]):
    """Verified tokens until they expire, at most ``max_entries`` (the oldest goes first)."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: dict[str, tuple[float, T]] = {}

    def get(self, token: str, now: float) -> T | None:
        """The value of a token still valid at ``now``."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[token]
            return None
        return entry[1]

    def put(self, token: str, value: T, expires: float) -> None:
        """Keep ``value`` for ``token`` until ``expires`` (wall-clock seconds)."""
        if len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]
        self._entries[token] = (expires, value)

    def clear(self) -> None:
        """Forget every token (the issuer's keys changed)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class JwtVerifier:
    """Verifies the configured issuer's tokens and maps their claims.

    Args:
        settings: the ``[auth.jwt]`` table.
        source: the issuer's keys.
        tenants: the configured tenants (a token's tenant claim names one).
        clock: wall-clock seconds (``exp`` and ``nbf`` are wall-clock times).
    """

    def __init__(
        self,
        settings: JwtSettings,
        source: KeySource,
        tenants: Mapping[str, TenantConfig],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.source = source
        self._tenants = tenants
        self._clock = clock
        self._registry = jws.JWSRegistry(algorithms=list(settings.algorithms))
        self._claims = JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=settings.leeway_s,
            iss={"essential": True, "value": settings.issuer},
            aud={"essential": True, "values": list(settings.audience)},
            exp={"essential": True},
        )
        self._cache: TokenCache[Caller] = TokenCache(settings.cache_entries)
        self._cache_version = source.version

    def identify(self, token: str) -> Caller:
        """The caller a token stands for, without waiting.

        Raises:
            KeysNeeded: the key it names is not held (call :meth:`identify_fetching`).
            InvalidToken: it fails a check (401).
            Forbidden: it names a tenant the configuration lacks (403).
        """
        now = self._clock()
        if self._cache_version != self.source.version:  # rotated: old keys' tokens re-checked
            self._cache.clear()
            self._cache_version = self.source.version
        cached = self._cache.get(token, now)
        if cached is not None:
            return cached
        claims = self._verified_claims(token)
        caller = self._caller(claims)
        ttl_end = now + self.settings.cache_ttl_s
        self._cache.put(token, caller, min(float(claims["exp"]) + self.settings.leeway_s, ttl_end))
        return caller

    async def identify_fetching(self, token: str) -> Caller:
        """As :meth:`identify`, refreshing the issuer's keys once if the token needs it.

        Raises:
            KeysUnavailable: the keys could not be loaded (503, fail closed).
            InvalidToken: it fails a check, or names a key the issuer does not publish.
            Forbidden: as :meth:`identify`.
        """
        try:
            return self.identify(token)
        except KeysNeeded as needed:
            kid = needed.kid
        try:
            known = await self.source.refresh_for(kid)
        except JwksError as exc:
            raise _unavailable(str(exc)) from None
        if not self.source.loaded:
            raise _unavailable("no key was loaded yet")
        if not known:
            raise InvalidToken(
                f"The token is signed with key {kid!r}, which the issuer does not publish."
            )
        return self.identify(token)

    def _verified_claims(self, token: str) -> dict[str, Any]:
        """The claims of a token whose signature and registered claims hold."""
        try:
            signed = jws.extract_compact(token.encode())
            header = signed.headers()
        except (JoseError, ValueError, TypeError):
            raise InvalidToken("The bearer token is not a well-formed JWT.") from None
        alg = header.get("alg")
        if alg not in self.settings.algorithms:
            raise InvalidToken(
                f"The token's algorithm {alg!r} is not allowed "
                f"(allowed: {', '.join(self.settings.algorithms)})."
            )
        key = self._key(header.get("kid"))
        try:
            valid = jws.validate_compact(signed, key, registry=self._registry)
        except (JoseError, ValueError, TypeError):
            valid = False
        if not valid:
            raise InvalidToken("The token's signature does not verify.")
        try:
            claims = _claims_decoder.decode(signed.payload or b"")
            self._claims.validate(claims)
        except msgspec.DecodeError:
            raise InvalidToken("The token's claims are not a JSON object.") from None
        except ExpiredTokenError:
            raise InvalidToken("The token has expired.") from None
        except MissingClaimError as exc:
            raise InvalidToken(f"The token lacks the claim(s) {exc.claim}.") from None
        except ClaimError as exc:
            raise InvalidToken(f"The token's `{exc.claim}` claim is not accepted.") from None
        return claims

    def _key(self, kid: object) -> Any:
        keys = self.source.keys
        if not keys:
            raise KeysNeeded(str(kid or ""))
        if kid is None and len(keys) == 1:  # an issuer with one key may leave kid out
            return next(iter(keys.values()))
        key = keys.get(str(kid)) if isinstance(kid, str) else None
        if key is None:
            raise KeysNeeded(str(kid or ""))
        return key

    def _caller(self, claims: Mapping[str, Any]) -> Caller:
        """Map verified claims to a caller (the claim names are configuration)."""
        s = self.settings
        name = claim(claims, s.tenant_claim)
        if not is_name(name):
            raise InvalidToken(
                f"The token's `{s.tenant_claim}` claim must name a tenant ({NAME_RULE})."
            )
        assert isinstance(name, str)
        tenant = self._tenants.get(name)
        if tenant is None:
            if not s.unconfigured_tenants:
                raise Forbidden(f"The token names tenant {name!r}, which is not configured.")
            tenant = TenantConfig(name=name)
        roles = claim(claims, s.roles_claim)
        roles = roles.split() if isinstance(roles, str) else roles
        admin = tenant.admin or (isinstance(roles, list) and s.admin_role in roles)
        return Caller(tenant, self._grant(claims), admin)

    def _grant(self, claims: Mapping[str, Any]) -> Grant | None:
        """The caller's own model list and limits, counted per subject."""
        s = self.settings
        models, limits = claim(claims, s.models_claim), claim(claims, s.limits_claim)
        if models is None and limits is None:
            return None
        if limits is not None and (
            not isinstance(limits, dict) or set(limits) - (GRANT_FIELDS - {"models"})
        ):
            raise InvalidToken(
                f"The token's `{s.limits_claim}` claim must be an object of rpm, tpm, "
                "budget_usd, budget_period and priority."
            )
        subject = str(claims.get("sub", ""))
        grant_id = "jwt-" + hashlib.sha256(subject.encode()).hexdigest()[:16]
        try:
            grant = Grant.from_mapping(f"claim {s.limits_claim}", grant_id, limits or {})
            patterns = ModelPatterns.parse(f"claim {s.models_claim}", models or [])
        except ValueError as exc:
            raise InvalidToken(f"The token's claims are refused: {exc}.") from None
        return Grant(
            id=grant.id,
            models=patterns,
            rpm=grant.rpm,
            tpm=grant.tpm,
            budget_usd=grant.budget_usd,
            budget_period=grant.budget_period,
            priority=grant.priority,
        )


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name; a dotted name not present as such walks into objects
    (``realm_access.roles``), so namespaced claims (``https://example.com/tenant``) work too."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _unavailable(why: str) -> KeysUnavailable:
    return KeysUnavailable(
        f"The token issuer's keys could not be read ({why}); retry shortly.",
        retry_after=KEYS_RETRY_AFTER_S,
    )
