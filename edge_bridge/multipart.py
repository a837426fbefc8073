"""Streaming ``multipart/form-data`` parsing for file uploads (python-multipart underneath).

Small fields are kept in memory; the ``file`` part goes straight to a temporary file, so an
upload of any size costs the bridge no memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import IO, Any

from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["Upload", "UploadTooLarge", "parse_upload"]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
MAX_FIELD_BYTES = 64 * 1024


class UploadTooLarge(Exception):
    """The file part is over the limit."""


@dataclass
class Upload:
    """The form: text fields, and the file part (on disk) with its name and size."""

    fields: dict[str, str] = field(default_factory=dict)
    file: IO[bytes] | None = None
    filename: str = ""
    size: int = 0


class _FormReader:
    """python-multipart callbacks that fill an :class:`Upload`."""

    def __init__(self, max_bytes: int) -> None:
        self.upload = Upload()
        self._max = max_bytes
        self._headers: dict[bytes, bytes] = {}
        self._header = b""
        self._value = b""
        self._name = ""
        self._buffer = bytearray()
        #: Whether the closing boundary was seen: without it the body was cut short.
        self.complete = False

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._header.lower()] = self._value
        self._header = self._value = b""

    def _on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode()
        if b"filename" in params and self.upload.file is None:
            self.upload.filename = params[b"filename"].decode(errors="replace")
            self.upload.file = tempfile.TemporaryFile()  # noqa: SIM115  (the caller closes it)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if self._name == "file" and self.upload.file is not None:
            self.upload.size += len(piece)
            if self.upload.size > self._max:
                raise UploadTooLarge
            self.upload.file.write(piece)
        elif len(self._buffer) + len(piece) <= MAX_FIELD_BYTES:
            self._buffer.extend(piece)

    def _on_part_end(self) -> None:
        if self._name != "file":
            self.upload.fields[self._name] = self._buffer.decode(errors="replace")
        self._headers, self._buffer, self._name = {}, bytearray(), ""

    def _on_end(self) -> None:
        self.complete = True


async def parse_upload(content_type: str, receive: Receive, max_bytes: int) -> Upload:
    """Parse the request body of a multipart upload.

    Raises:
        ValueError: not multipart, malformed, or cut short (no closing boundary: a truncated
            upload or a client that went away is never taken for a whole file).
        UploadTooLarge: the file is over ``max_bytes``.
    """
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ValueError("expected multipart/form-data with a boundary")
    reader = _FormReader(max_bytes)
    parser = MultipartParser(boundary, reader.callbacks())  # type: ignore[arg-type]
    try:
        while True:
            message = await receive()
            parser.write(message.get("body", b""))
            if not message.get("more_body", False):
                break
        parser.finalize()  # python-multipart does not check the closing boundary (its TODO)
    except BaseException:
        _discard(reader.upload)
        raise
    if not reader.complete:
        _discard(reader.upload)
        raise ValueError("the multipart body ends before its closing boundary")
    if reader.upload.file is not None:
        reader.upload.file.seek(0)
    return reader.upload


def _discard(upload: Upload) -> None:
    if upload.file is not None:
        upload.file.close()
