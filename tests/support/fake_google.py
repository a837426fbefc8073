"""A fake Google upstream on loopback: Gemini's ``generateContent`` and
``streamGenerateContent?alt=sse`` as Google AI Studio (``/v1beta/models/...``, key in
``x-goog-api-key``) and Vertex AI (``/v1/projects/P/locations/R/publishers/google/models/...``,
an OAuth bearer token) serve them, Claude on Vertex AI (``.../publishers/anthropic/models/
M:rawPredict`` and ``:streamRawPredict``, the Messages API's body and events), and an OAuth
token endpoint (``/token``) for the
service-account JWT-bearer grant.

It checks what it receives as Google would: the key or an unexpired token it issued, a JWT
assertion signed by the service account's key with the right claims, a body whose turns are
``user``/``model`` with parts. A request that fails a check gets Google's error shape and is
recorded in :attr:`FakeGoogle.refused`. Tests script answers and read what was sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.anthropic_shapes import MESSAGE, stream_events
from tests.support.loopback_http import serving, streamed

__all__ = ["FakeGoogle", "GeminiAnswer", "google_error", "running_google", "service_account"]

USAGE = {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18}
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_EVENT_STREAM = {"content-type": "text/event-stream"}


def google_error(code: int, status: str, message: str, **extra: Any) -> dict[str, Any]:
    """A Google API error body (``google.rpc.Status`` in JSON)."""
    return {"error": {"code": code, "message": message, "status": status, **extra}}


@dataclass
class GeminiAnswer:
    """One scripted answer. ``text`` is streamed a word per event; ``calls`` are
    ``functionCall`` parts (``thoughtSignature`` beside them when given as ``signature``);
    ``error`` answers that status and body instead; ``cut`` closes a stream before its
    ``finishReason``."""

    text: str = "Hello from Gemini"
    calls: list[dict[str, Any]] = field(default_factory=list)
    finish: str = "STOP"
    usage: dict[str, Any] = field(default_factory=lambda: dict(USAGE))
    error: dict[str, Any] | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    cut: bool = False


@dataclass(frozen=True)
class GoogleCall:
    """A generate call the fake accepted."""

    path: str
    query: str
    headers: dict[str, str]
    body: dict[str, Any]


def service_account(path: Path, token_uri: str, project: str = "proj-1") -> rsa.RSAPrivateKey:
    """Write a service-account key file with a freshly generated RSA key; return the key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": f"edge@{project}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info))
    return key


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


class FakeGoogle:
    """The server: ``base_url`` is its root; keys, signing key and answers set by the test."""

    def __init__(self) -> None:
        self.api_key = "AIza-fake-key-0123456789"
        self.public_key: rsa.RSAPublicKey | None = None
        self.email = ""
        self.token_lifetime_s = 3600
        self.token_failure: tuple[int, dict[str, Any]] | None = None
        self.hold_tokens: asyncio.Event | None = None  # token answers wait for it when set
        self.script: deque[GeminiAnswer] = deque()
        self.calls: list[GoogleCall] = []
        self.refused: list[str] = []
        self.tokens: dict[str, float] = {}  # token -> when it expires (time.time)
        self.token_requests = 0
        self._token_asked = asyncio.Condition()
        self.base_url = ""

    def issue_service_account(self, path: Path, project: str = "proj-1") -> None:
        """Write a service-account key file to ``path`` whose assertions the token endpoint
        takes (one account at a time)."""
        key = service_account(path, f"{self.base_url}/token", project)
        self.public_key = key.public_key()
        self.email = f"edge@{project}.iam.gserviceaccount.com"

    async def wait_token_requests(self, count: int) -> None:
        """Until the token endpoint was asked ``count`` times (bounded by the caller)."""
        async with self._token_asked:
            await self._token_asked.wait_for(lambda: self.token_requests >= count)

    # the token endpoint

    async def _token(self, request: web.BaseRequest) -> web.Response:
        form = urllib.parse.parse_qs((await request.read()).decode())
        async with self._token_asked:
            self.token_requests += 1
            self._token_asked.notify_all()
        if self.hold_tokens is not None:
            await self.hold_tokens.wait()
        if self.token_failure is not None:
            status, body = self.token_failure
            return web.json_response(body, status=status)
        problem = self._check_assertion(form)
        if problem:
            self.refused.append(problem)
            return web.json_response(
                {"error": "invalid_grant", "error_description": problem}, status=400
            )
        token = f"ya29.token-{self.token_requests}"
        self.tokens[token] = time.time() + self.token_lifetime_s
        answer = {
            "access_token": token,
            "expires_in": self.token_lifetime_s,
            "token_type": "Bearer",
        }
        return web.json_response(answer)

    def _check_assertion(self, form: dict[str, list[str]]) -> str:  # noqa: PLR0911
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return f"grant_type {form.get('grant_type')}"
        try:
            head, claims, signature = form["assertion"][0].split(".")
        except (KeyError, ValueError):
            return "no JWT assertion"
        if json.loads(_b64(head)) != {"alg": "RS256", "typ": "JWT", "kid": "k1"}:
            return f"JWT header {json.loads(_b64(head))}"
        assert self.public_key is not None
        try:
            self.public_key.verify(
                _b64(signature),
                f"{head}.{claims}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except Exception:
            return "bad signature"
        body = json.loads(_b64(claims))
        now = time.time()
        if body.get("iss") != self.email or body.get("scope") != SCOPE:
            return f"claims {body}"
        if body.get("aud") != f"{self.base_url}/token":
            return f"audience {body.get('aud')}"
        if not body["iat"] - 60 <= now <= body["exp"] or body["exp"] - body["iat"] > 3600:
            return f"times {body['iat']}..{body['exp']}"
        return ""

    # generateContent

    def _authorized(self, request: web.BaseRequest) -> str:
        if request.path.startswith("/v1beta/"):
            if "key" in request.query:
                return "the key travelled in the URL"
            key = request.headers.get("x-goog-api-key")
            return "" if key == self.api_key else f"API key {key!r}"
        bearer = request.headers.get("authorization", "")
        token = bearer.removeprefix("Bearer ")
        if token not in self.tokens:
            return f"unknown token {token!r}"
        if self.tokens[token] <= time.time():
            return f"expired token {token!r}"
        return ""

    @staticmethod
    def _check_body(body: dict[str, Any]) -> str:
        if "anthropic_version" in body:  # Claude on Vertex AI: the Messages API's body
            if body["anthropic_version"] != "vertex-2023-10-16" or "model" in body:
                return f"not a Vertex AI Messages body: {sorted(body)}"
            if not body.get("messages") or not body.get("max_tokens"):
                return "messages and max_tokens are required"
            return ""
        contents = body.get("contents")
        if not contents:
            return "contents is empty"
        for turn in contents:
            if turn.get("role") not in {"user", "model"} or not turn.get("parts"):
                return f"a turn Gemini refuses: {turn}"
        return ""

    async def _generate(self, request: web.BaseRequest) -> web.StreamResponse:  # noqa: PLR0911
        problem = self._authorized(request)
        if problem:
            self.refused.append(problem)
            status, name = (
                (401, "UNAUTHENTICATED") if "token" in problem else (400, "INVALID_ARGUMENT")
            )
            return web.json_response(google_error(status, name, problem), status=status)
        body = json.loads(await request.read())
        problem = self._check_body(body)
        if problem:
            self.refused.append(problem)
            return web.json_response(google_error(400, "INVALID_ARGUMENT", problem), status=400)
        self.calls.append(
            GoogleCall(request.path, request.query_string, dict(request.headers), body)
        )
        answer = self.script.popleft() if self.script else GeminiAnswer()
        if answer.error is not None:
            return web.json_response(answer.error, status=answer.status, headers=answer.headers)
        model = request.path.rsplit("/", 1)[1].split(":")[0]
        if "/publishers/anthropic/" in request.path:
            return await self._claude(request, answer, model)
        if request.path.endswith(":streamGenerateContent"):
            if request.query.get("alt") != "sse":
                return web.json_response(google_error(400, "INVALID_ARGUMENT", "alt"), status=400)
            return await self._stream(request, answer, model)
        return web.json_response(self._response(answer, model, answer.text, final=True))

    @staticmethod
    def _response(answer: GeminiAnswer, model: str, text: str, *, final: bool) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"text": text}] if text else []
        if final:
            for call in answer.calls:
                part: dict[str, Any] = {
                    "functionCall": {"name": call["name"], "args": call["args"]}
                }
                if call.get("signature"):
                    part["thoughtSignature"] = call["signature"]
                parts.append(part)
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if final:
            candidate["finishReason"] = answer.finish
        return {
            "candidates": [candidate],
            "usageMetadata": answer.usage if final else {"promptTokenCount": 11},
            "modelVersion": model,
            "responseId": "resp-0123",
        }

    async def _stream(
        self, request: web.BaseRequest, answer: GeminiAnswer, model: str
    ) -> web.StreamResponse:
        words = answer.text.split(" ")
        events = []
        for i, word in enumerate(words):
            last = i == len(words) - 1
            if last and answer.cut:
                break
            piece = word if i == 0 else f" {word}"
            event = self._response(answer, model, piece, final=last)
            events.append(f"data: {json.dumps(event)}\r\n\r\n".encode())
        return await streamed(request, events, _EVENT_STREAM)

    @staticmethod
    async def _claude(
        request: web.BaseRequest, answer: GeminiAnswer, model: str
    ) -> web.StreamResponse:
        """Claude's answer, as the Messages API gives it (a stream of its events)."""
        if request.path.endswith(":rawPredict"):
            message = {
                **MESSAGE,
                "model": model,
                "content": [{"type": "text", "text": answer.text}],
            }
            return web.json_response(message)
        words = answer.text.split(" ")
        pieces = [w if i == 0 else f" {w}" for i, w in enumerate(words)]
        events = stream_events(pieces)
        return await streamed(request, events[:-2] if answer.cut else events, _EVENT_STREAM)

    async def serve(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/token" and request.method == "POST":
            return await self._token(request)
        if request.method == "POST" and ":" in request.path.rsplit("/", 1)[-1]:
            return await self._generate(request)
        return web.json_response(google_error(404, "NOT_FOUND", request.path), status=404)


@contextlib.asynccontextmanager
async def running_google(key_file: Path | None = None) -> AsyncIterator[FakeGoogle]:
    """A fake Google on a free loopback port, stopped on exit; with ``key_file``, the
    service account it writes there is the one it takes."""
    fake = FakeGoogle()
    async with serving(fake.serve) as fake.base_url:
        if key_file is not None:
            fake.issue_service_account(key_file)
        yield fake
