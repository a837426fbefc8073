"""Which JOSE library verifies the broker's bearer JWTs: PyJWT, joserfc or authlib.

    pip install "pyjwt[crypto]" joserfc authlib
    python -m bench.jwt_libraries [--rounds 3000]

Each library verifies the same RS256 (2048-bit) and ES256 (P-256) tokens the way the broker
does: the signature against a key picked by ``kid``, then ``iss``, ``aud``, ``exp`` and
``nbf``. The floor is the ``cryptography`` verify call alone (every library ends in it), and
the last two lines are the broker's own path (joserfc plus its claim mapping) and what its
verified-token cache costs on a repeated token. Reports the
median microseconds of one verification over ``--rounds`` (after a warm-up), one core.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ISSUER, AUDIENCE = "https://id.example.test", "llm-edge"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign(alg: str, key: Any, claims: dict[str, Any]) -> str:
    header = {"alg": alg, "typ": "JWT", "kid": "k1"}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if alg == "RS256":
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    else:
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input}.{_b64(signature)}"


def _median_us(verify: Callable[[], object], rounds: int) -> float:
    for _ in range(min(200, rounds)):
        verify()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        verify()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def _floor(alg: str, public: Any, token: str) -> Callable[[], object]:
    head, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    if alg == "RS256":
        return lambda: public.verify(raw, head.encode(), padding.PKCS1v15(), hashes.SHA256())
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    return lambda: public.verify(der, head.encode(), ec.ECDSA(hashes.SHA256()))


def _pyjwt(alg: str, jwk: dict[str, Any], token: str) -> Callable[[], object]:
    import jwt

    key = jwt.PyJWKSet.from_dict({"keys": [jwk]})["k1"]

    def verify() -> object:
        kid = jwt.get_unverified_header(token)["kid"]  # the broker picks the key by kid
        assert kid == "k1"
        return jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=30,
            options={"require": ["exp", "iss", "aud"]},
        )

    return verify


def _joserfc(alg: str, jwk: dict[str, Any], token: str) -> Callable[[], object]:
    from joserfc import jwt
    from joserfc.jwk import KeySet

    keys = KeySet.import_key_set({"keys": [jwk]})
    registry = jwt.JWTClaimsRegistry(
        leeway=30,
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": AUDIENCE},
        exp={"essential": True},
    )

    def verify() -> object:
        decoded = jwt.decode(token, keys, algorithms=[alg])
        registry.validate(decoded.claims)  # a second step: decode alone checks no claim
        return decoded.claims

    return verify


def _authlib(alg: str, jwk: dict[str, Any], token: str) -> Callable[[], object]:
    with warnings.catch_warnings():  # authlib.jose is deprecated in favour of joserfc
        warnings.simplefilter("ignore")
        from authlib.jose import JsonWebKey, JsonWebToken

    keys = JsonWebKey.import_key_set({"keys": [jwk]})
    verifier = JsonWebToken([alg])
    options = {"iss": {"essential": True, "value": ISSUER}, "aud": {"essential": True}}

    def verify() -> object:
        claims = verifier.decode(token, keys, claims_options=options)
        claims.validate(leeway=30)
        return claims

    return verify


def _broker(alg: str, jwk: dict[str, Any], token: str) -> Callable[[], object]:
    """The broker's own path, uncached: header, kid, signature, claims, claims to caller."""
    from pathlib import Path

    from broker.tenancy.jwks import KeySource, parse_jwks
    from broker.tenancy.jwt import JwtVerifier
    from broker.tenancy.jwt_settings import JwtSettings
    from broker.tenancy.tenants import TenantConfig

    settings = JwtSettings(
        issuer=ISSUER, audience=(AUDIENCE,), jwks_file="jwks.json", algorithms=(alg,)
    )
    source = KeySource(
        url=None, file=Path("jwks.json"), timeout_s=1, min_refresh_s=1, clock=time.monotonic
    )
    source.keys = parse_jwks(json.dumps({"keys": [jwk]}).encode())
    verifier = JwtVerifier(settings, source, {"acme": TenantConfig(name="acme")})
    return lambda: verifier._caller(verifier._verified_claims(token))


def _cache_hit(token: str) -> Callable[[], object]:
    from broker.tenancy.jwt import TokenCache

    cache: TokenCache[str] = TokenCache(4096)
    cache.put(token, "grant", expires=time.time() + 3600)
    return lambda: cache.get(token, time.time())


def main() -> None:
    """Print one table: median microseconds per verification, per library and algorithm."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    args = parser.parse_args()
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "svc",
        "exp": now + 3600,
        "nbf": now - 5,
        "tenant": "acme",
    }
    from joserfc.jwk import ECKey, RSAKey

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rows = []
    for alg, key, public_jwk in (
        ("RS256", rsa_key, RSAKey.import_key(rsa_key.public_key()).as_dict()),
        ("ES256", ec_key, ECKey.import_key(ec_key.public_key()).as_dict()),
    ):
        jwk = {**public_jwk, "kid": "k1", "alg": alg, "use": "sig"}
        token = _sign(alg, key, claims)
        contenders: list[tuple[str, Callable[[], object]]] = [
            ("cryptography verify (floor)", _floor(alg, key.public_key(), token)),
            ("PyJWT", _pyjwt(alg, jwk, token)),
            ("joserfc", _joserfc(alg, jwk, token)),
            ("authlib", _authlib(alg, jwk, token)),
            ("broker JwtVerifier, uncached (joserfc)", _broker(alg, jwk, token)),
            ("broker token cache hit", _cache_hit(token)),
        ]
        for name, verify in contenders:
            verify()  # each must accept the token before it is timed
            rows.append((alg, name, _median_us(verify, args.rounds)))
    print("| alg | verifier | median us |\n|---|---|---:|")
    for alg, name, us in rows:
        print(f"| {alg} | {name} | {us:.1f} |")


if __name__ == "__main__":
    main()
