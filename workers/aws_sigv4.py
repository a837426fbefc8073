"""AWS Signature Version 4 for one POST (the ``Authorization`` header Bedrock checks).

Why not botocore's ``SigV4Auth``: it costs 80 µs a call alone (an ``AWSRequest`` built, its
headers normalised, its URL split again), more than the rest of a worker's upstream call
(about 50 µs); this one signs the same request in about 20 µs, from a URL worked out once and
a signing key kept for the day. A whole Converse call through the adapter, one process
against a loopback upstream at 64 in flight, costs 0.09 to 0.13 ms of CPU with this signer
and 0.27 to 0.32 ms with botocore's (the OpenAI adapter in the same run: 0.08 to 0.10 ms).
Its output is checked against botocore's for the same inputs in the tests, and the fake
Bedrock verifies signatures with botocore.

Only what Bedrock's runtime API needs: POST, no query string, a JSON or event-stream body.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["AwsCredentials", "sign_post"]

_ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    """One set of AWS credentials (``token`` for temporary ones)."""

    access_key: str
    secret_key: str = ""
    token: str | None = None

    def __repr__(self) -> str:  # never print the secret
        return f"AwsCredentials(access_key={self.access_key!r}, ...)"


@functools.lru_cache(maxsize=64)
def _signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


@functools.lru_cache(maxsize=1024)
def _target(url: str) -> tuple[str, str]:
    """The ``host`` header and the canonical URI of ``url``, as botocore writes them: the
    path (already percent-encoded) encoded once more, except ``/`` and ``~``."""
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname or ""
    if parts.port is not None and parts.port != default:
        host = f"{host}:{parts.port}"
    return host, urllib.parse.quote(parts.path or "/", safe="/~")


def sign_post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    credentials: AwsCredentials,
    *,
    region: str,
    service: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers to add to a POST of ``body`` to ``url`` that carries ``headers``.

    Every header given is signed (names are matched case-insensitively), with ``host``,
    ``x-amz-date`` and, for temporary credentials, ``x-amz-security-token``.

    Returns:
        ``x-amz-date``, ``authorization`` and, for temporary credentials,
        ``x-amz-security-token``.
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    host, canonical_uri = _target(url)
    added = {"x-amz-date": stamp}
    if credentials.token:
        added["x-amz-security-token"] = credentials.token
    signed = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    signed.update(added)
    signed["host"] = host
    names = sorted(signed)
    canonical = "\n".join(
        (
            "POST",
            canonical_uri,
            "",
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        )
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = f"{_ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = _signing_key(credentials.secret_key, day, region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    added["authorization"] = (
        f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return added
