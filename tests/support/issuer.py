"""A token issuer for tests: key pairs it generates, JWTs it signs (and forges), its JWKS
served over a real HTTP server on loopback, so a test can rotate keys mid-run."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

__all__ = ["AUDIENCE", "ISSUER", "Issuer", "unsigned"]

ISSUER = "https://id.llm-edge.test/"
AUDIENCE = "llm-edge"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS with any header, claims and signature bytes (forgeries)."""
    head = _b64(json.dumps(header).encode())
    return f"{head}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"


class Issuer:
    """Signs tokens with keys it generates and publishes a JWKS of the ones chosen.

    Args:
        port: the port to serve the JWKS on (0: any free one).
    """

    def __init__(self, port: int = 0) -> None:
        self._keys: dict[str, RSAKey | ECKey] = {}
        self._published: list[str] = []
        self._port = port
        self._runner: web.AppRunner | None = None
        #: JWKS requests answered so far.
        self.fetches = 0
        #: Set when a JWKS request arrives; while ``hold`` is set, requests wait for it to clear.
        self.asked = asyncio.Event()
        self.hold: asyncio.Event | None = None

    def new_key(self, kid: str, kind: str = "RSA") -> str:
        """Generate a key pair (``RSA`` 2048 or ``EC`` P-256) named ``kid``, unpublished."""
        self._keys[kid] = (
            RSAKey.generate_key(2048, parameters={"kid": kid})
            if kind == "RSA"
            else ECKey.generate_key("P-256", parameters={"kid": kid})
        )
        return kid

    def publish(self, *kids: str) -> None:
        """Serve only these keys from now on (a rotation drops the others)."""
        self._published = list(kids)

    def jwks(self) -> dict[str, Any]:
        """The published keys, public halves only."""
        return {"keys": [self._keys[k].as_dict(private=False) for k in self._published]}

    def write_jwks(self, path: Path) -> Path:
        """Write the JWKS to ``path`` (for ``jwks_file``)."""
        path.write_text(json.dumps(self.jwks()))
        return path

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims for tenant ``acme`` (an override of ``None`` removes a claim)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "svc-1",
            "iat": now,
            "nbf": now - 5,
            "exp": now + 600,
            "tenant": "acme",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, kid: str, **overrides: Any) -> str:
        """A token signed with key ``kid`` (RS256 or ES256 by its kind)."""
        key = self._keys[kid]
        alg = "RS256" if isinstance(key, RSAKey) else "ES256"
        return jwt.encode({"alg": alg, "kid": kid, "typ": "JWT"}, self.claims(**overrides), key)

    def hmac_forgery(self, kid: str) -> str:
        """An HS256 token whose HMAC secret is key ``kid``'s public PEM: the classic
        algorithm-confusion forgery, which anyone holding the JWKS could make."""
        public = self._keys[kid].public_key
        secret = public.public_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        head = _b64(json.dumps({"alg": "HS256", "kid": kid}).encode())
        body = _b64(json.dumps(self.claims()).encode())
        signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(signature)}"

    @property
    def url(self) -> str:
        """The JWKS URL."""
        return f"http://127.0.0.1:{self._port}/.well-known/jwks.json"

    async def start(self) -> None:
        """Serve the JWKS on loopback."""

        async def jwks(request: web.Request) -> web.Response:
            self.asked.set()
            if self.hold is not None:
                await self.hold.wait()
            self.fetches += 1
            return web.json_response(self.jwks())

        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", jwks)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        if self._port == 0:
            self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
