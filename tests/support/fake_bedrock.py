"""A fake Bedrock runtime on loopback: ``Converse`` and ``ConverseStream`` as AWS documents
them (``/model/{modelId}/converse`` and ``/converse-stream``), answering JSON and the binary
``application/vnd.amazon.eventstream``.

Every call's SigV4 signature is verified with botocore's own signer (the adapter signs with
its own code), against the keys the test registered; the body is checked as Converse
would (alternating user/assistant turns starting with the user's, no blank text). A call that
fails a check is refused as AWS refuses it and recorded in :attr:`FakeBedrock.refused`.
Event-stream frames are written here by hand from the format's description (prelude, typed
headers, payload, CRC32s), independently of the adapter's parser.
"""

from __future__ import annotations

import binascii
import contextlib
import itertools
import json
import re
import struct
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.loopback_http import serving, streamed

__all__ = ["BedrockAnswer", "BedrockCall", "FakeBedrock", "frame", "running_bedrock"]

USAGE = {"inputTokens": 21, "outputTokens": 9, "totalTokens": 30}
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<day>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[^,]+), "
    r"Signature=(?P<sig>[0-9a-f]{64})$"
)


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        bytes([len(raw_name)]) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value
    )


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (lengths, CRC), string headers, payload, CRC."""
    raw_headers = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + raw_headers + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return frame(headers, json.dumps({**payload, "p": "abcdefghij"}).encode())


@dataclass
class BedrockAnswer:
    """One scripted answer: ``text`` (streamed a word per delta), ``tools`` (``toolUse``
    blocks), or an ``error_type`` with ``status`` (``stream_exception``: sent inside the
    stream after the text instead); ``cut`` closes a stream before ``messageStop``;
    ``split`` writes the stream in pieces of that many bytes."""

    text: str = "Hello from Bedrock"
    tools: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    usage: dict[str, Any] = field(default_factory=lambda: dict(USAGE))
    error_type: str | None = None
    status: int = 400
    stream_exception: bool = False
    cut: bool = False
    split: int = 0


@dataclass(frozen=True)
class BedrockCall:
    """A call the fake accepted."""

    model: str
    stream: bool
    headers: dict[str, str]
    body: dict[str, Any]
    access_key: str


class FakeBedrock:
    """The server: register credentials in :attr:`keys`, script answers, read calls."""

    def __init__(self, region: str = "us-west-2") -> None:
        self.region = region
        self.keys: dict[str, tuple[str, str | None]] = {}  # access key -> (secret, token)
        self.script: deque[BedrockAnswer] = deque()
        self.calls: list[BedrockCall] = []
        self.refused: list[str] = []
        self.base_url = ""

    # checks

    def _signature_problem(self, request: web.BaseRequest, body: bytes) -> str:  # noqa: PLR0911
        match = _AUTH.match(request.headers.get("authorization", ""))
        if match is None:
            return "no SigV4 authorization header"
        known = self.keys.get(match["key"])
        if known is None:
            return f"UnrecognizedClientException: unknown access key {match['key']}"
        secret, token = known
        if token is not None and request.headers.get("x-amz-security-token") != token:
            return "UnrecognizedClientException: the security token is invalid"
        if (match["region"], match["service"]) != (self.region, "bedrock"):
            return f"InvalidSignatureException: scope {match['region']}/{match['service']}"
        signed = match["signed"].split(";")
        if not {"host", "x-amz-date", "content-type"} <= set(signed):
            return f"InvalidSignatureException: signed headers {signed}"
        amz_date = request.headers["x-amz-date"]
        if amz_date[:8] != match["day"]:
            return "InvalidSignatureException: date and scope differ"
        copied = {name: request.headers[name] for name in signed if name != "host"}
        aws_request = AWSRequest(
            method=request.method,
            url=f"http://{request.headers['host']}{request.raw_path}",
            data=body,
            headers=copied,
        )
        aws_request.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(match["key"], secret, token), "bedrock", self.region)
        to_sign = signer.string_to_sign(aws_request, signer.canonical_request(aws_request))
        if signer.signature(to_sign, aws_request) != match["sig"]:
            return "InvalidSignatureException: the signature does not match"
        return ""

    @staticmethod
    def _body_problem(body: dict[str, Any]) -> str:
        roles = [m.get("role") for m in body.get("messages") or ()]
        if not roles or roles[0] != "user":
            return f"ValidationException: messages must start with a user turn: {roles}"
        if any(a == b for a, b in itertools.pairwise(roles)):
            return f"ValidationException: roles must alternate: {roles}"
        for message in body["messages"]:
            if not message.get("content"):
                return "ValidationException: a message without content"
            for block in message["content"]:
                if "text" in block and not block["text"].strip():
                    return "ValidationException: text content blocks must be non-empty"
        return ""

    # answers

    def _refuse(self, problem: str) -> web.Response:
        self.refused.append(problem)
        error_type, _, message = problem.partition(": ")
        status = 400 if error_type == "ValidationException" else 403
        return self._error(error_type, status, message)

    @staticmethod
    def _error(error_type: str, status: int, message: str) -> web.Response:
        return web.json_response(
            {"message": message},
            status=status,
            headers={
                "x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                "x-amzn-RequestId": "req-error",
            },
        )

    @staticmethod
    def _converse(answer: BedrockAnswer) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"text": answer.text}] if answer.text else []
        content += [{"toolUse": tool} for tool in answer.tools]
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": answer.stop_reason,
            "usage": answer.usage,
            "metrics": {"latencyMs": 120},
        }

    @staticmethod
    def _events(answer: BedrockAnswer) -> list[bytes]:
        out = [event("messageStart", {"role": "assistant"})]
        words = answer.text.split(" ") if answer.text else []
        for i, word in enumerate(words):
            piece = word if i == 0 else f" {word}"
            out.append(
                event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
            )
        if words:
            out.append(event("contentBlockStop", {"contentBlockIndex": 0}))
        for n, tool in enumerate(answer.tools, start=1 if words else 0):
            start = {"toolUse": {"toolUseId": tool["toolUseId"], "name": tool["name"]}}
            arguments = json.dumps(tool["input"])
            half = len(arguments) // 2
            out += [
                event("contentBlockStart", {"contentBlockIndex": n, "start": start}),
                event(
                    "contentBlockDelta",
                    {"contentBlockIndex": n, "delta": {"toolUse": {"input": arguments[:half]}}},
                ),
                event(
                    "contentBlockDelta",
                    {"contentBlockIndex": n, "delta": {"toolUse": {"input": arguments[half:]}}},
                ),
                event("contentBlockStop", {"contentBlockIndex": n}),
            ]
        if answer.stream_exception:
            headers = {
                ":exception-type": answer.error_type or "modelStreamErrorException",
                ":content-type": "application/json",
                ":message-type": "exception",
            }
            return [*out, frame(headers, json.dumps({"message": "the model broke"}).encode())]
        if answer.cut:
            return out
        out.append(event("messageStop", {"stopReason": answer.stop_reason}))
        out.append(event("metadata", {"usage": answer.usage, "metrics": {"latencyMs": 120}}))
        return out

    async def serve(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        parts = request.raw_path.split("/")
        if request.method != "POST" or len(parts) != 4 or parts[1] != "model":
            return self._error("UnknownOperationException", 404, request.raw_path)
        problem = self._signature_problem(request, body)
        if problem:
            return self._refuse(problem)
        decoded = json.loads(body)
        problem = self._body_problem(decoded)
        if problem:
            return self._refuse(problem)
        stream = parts[3] == "converse-stream"
        access_key = _AUTH.match(request.headers["authorization"])["key"]  # type: ignore[index]
        model = urllib.parse.unquote(parts[2])
        self.calls.append(BedrockCall(model, stream, dict(request.headers), decoded, access_key))
        answer = self.script.popleft() if self.script else BedrockAnswer()
        if answer.error_type and not answer.stream_exception:
            return self._error(answer.error_type, answer.status, f"{answer.error_type} happened")
        if not stream:
            return web.json_response(
                self._converse(answer), headers={"x-amzn-RequestId": "req-0123"}
            )
        data = b"".join(self._events(answer))
        size = answer.split or len(data)
        pieces = (data[start : start + size] for start in range(0, len(data), size))
        return await streamed(
            request,
            pieces,
            {"content-type": "application/vnd.amazon.eventstream", "x-amzn-RequestId": "req-0123"},
        )


@contextlib.asynccontextmanager
async def running_bedrock(region: str = "us-west-2") -> AsyncIterator[FakeBedrock]:
    """A fake Bedrock runtime on a free loopback port, stopped on exit."""
    fake = FakeBedrock(region)
    async with serving(fake.serve) as fake.base_url:
        yield fake
