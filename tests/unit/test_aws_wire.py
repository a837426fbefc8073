"""Our SigV4 signer and event-stream decoder against botocore's, on the same inputs."""

from __future__ import annotations

import binascii
import itertools
import json
import struct
import uuid
from datetime import UTC, datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.fake_bedrock import event, frame
from workers.aws_eventstream import EventStreamDecoder, EventStreamError
from workers.aws_sigv4 import AwsCredentials, sign_post

URLS = [
    "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
    "https://bedrock-runtime.eu-west-1.amazonaws.com/model/"
    "arn%3Aaws%3Abedrock%3Aeu-west-1%3A123456789012%3Ainference-profile%2Feu.x-v1%3A0/converse-stream",
    "http://127.0.0.1:8123/model/us.amazon.nova-pro-v1%3A0/converse",
]


def botocore_authorization(
    url: str, body: bytes, headers: dict[str, str], credentials: Credentials, region: str
) -> tuple[str, datetime]:
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(credentials, "bedrock", region).add_auth(request)
    signed_at = datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    return request.headers["Authorization"], signed_at.replace(tzinfo=UTC)


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//////////wEaDA=="])
def test_signatures_equal_botocores(url: str, token: str | None) -> None:
    """For model ids, inference-profile ARNs and a loopback port, with and without a session
    token, our Authorization header is byte for byte botocore's."""
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "héllo  x"}]}]})
    headers = {"content-type": "application/json", "accept": "application/vnd.amazon.eventstream"}
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    expected, signed_at = botocore_authorization(
        url, body.encode(), headers, credentials, "eu-west-1"
    )
    ours = sign_post(
        url,
        body.encode(),
        headers,
        AwsCredentials(credentials.access_key, credentials.secret_key, token),
        region="eu-west-1",
        service="bedrock",
        now=signed_at,
    )
    assert ours["authorization"] == expected
    assert ours["x-amz-date"] == signed_at.strftime("%Y%m%dT%H%M%SZ")
    assert ours.get("x-amz-security-token") == token


def test_a_different_secret_gives_a_different_signature() -> None:
    """The signature depends on the secret (and the secret never appears in the headers)."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    signed = [
        sign_post(
            URLS[0], b"{}", {}, AwsCredentials("AKID", secret), region="r", service="s", now=now
        )
        for secret in ("one", "two")
    ]
    assert signed[0]["authorization"] != signed[1]["authorization"]
    assert not any("one" in value for value in signed[0].values())


def botocore_messages(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(dict(m.headers), m.payload) for m in buffer]


def ours(pieces: list[bytes]) -> list[tuple[dict[str, object], bytes]]:
    decoder = EventStreamDecoder()
    return [(m.headers, m.payload) for piece in pieces for m in decoder.feed(piece)]


def typed_frame() -> bytes:
    """A message with every header value type the format defines."""
    headers = b""
    for name, kind, value in (
        (b"t", 0, b""),
        (b"f", 1, b""),
        (b"byte", 2, struct.pack(">b", -3)),
        (b"short", 3, struct.pack(">h", -300)),
        (b"int", 4, struct.pack(">i", 70000)),
        (b"long", 5, struct.pack(">q", 2**40)),
        (b"bytes", 6, struct.pack(">H", 3) + b"\x00\x01\x02"),
        (b"string", 7, struct.pack(">H", 5) + "héll".encode()),
        (b"time", 8, struct.pack(">q", 1700000000000)),
        (b"uuid", 9, uuid.UUID(int=42).bytes),
    ):
        headers += bytes([len(name)]) + name + bytes([kind]) + value
    payload = b'{"x": 1}'

    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + headers + payload
    return message + struct.pack(">I", binascii.crc32(message))


STREAM = b"".join(
    [
        event("messageStart", {"role": "assistant"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "héllo " * 50}}),
        frame({":message-type": "exception", ":exception-type": "throttlingException"}, b"{}"),
        typed_frame(),
        frame({":message-type": "event", ":event-type": "empty"}, b""),
    ]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=12))
def test_any_split_decodes_as_botocore_does(cuts: list[int]) -> None:
    """Cut anywhere, in any number of pieces, the stream decodes to botocore's messages."""
    points = [0, *sorted(set(cuts)), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    expected = botocore_messages(STREAM)
    assert len(expected) == 5
    assert ours(pieces) == expected


@pytest.mark.parametrize(("where", "what"), [(5, "prelude"), (-1, "message"), (-10, "message")])
def test_a_corrupt_frame_is_refused(where: int, what: str) -> None:
    """A flipped byte in the prelude or the message fails its checksum."""
    data = bytearray(event("messageStart", {"role": "assistant"}))
    data[where] ^= 0x01
    with pytest.raises(EventStreamError, match=f"{what} checksum"):
        EventStreamDecoder().feed(bytes(data))


def test_a_long_message_is_held_until_whole() -> None:
    """A message arriving in many reads is held, not decoded piecemeal, then given whole."""
    data = event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x" * 100_000}})
    decoder = EventStreamDecoder()
    pieces = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    for piece in pieces[:-1]:
        assert decoder.feed(piece) == []
    assert decoder.pending == len(data) - len(pieces[-1])
    (message,) = decoder.feed(pieces[-1])
    assert json.loads(message.payload)["delta"]["text"] == "x" * 100_000
    assert decoder.pending == 0
