"""Input file validation, streamed from disk: nothing is held but the set of custom_ids.

It runs on the event loop in slices of :data:`SLICE_LINES` lines, giving way between slices:
a thread would hold the GIL for up to the interpreter's switch interval (5 ms) at a time and
delay every interactive request the broker is serving meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from schemas.batch import MAX_FILE_BYTES, BatchError, InputLine
from schemas.codec import decode_json

__all__ = ["MAX_LINES", "Validation", "iter_lines", "validate_file"]

#: Lines checked between two yields to the event loop (about a millisecond of work).
SLICE_LINES = 256

#: OpenAI's limits for one batch input file.
MAX_LINES = 50_000
#: Validation errors reported per batch (the rest are counted in the last message).
MAX_REPORTED = 100

_line_decoder = msgspec.json.Decoder(InputLine)


@dataclass(slots=True)
class Validation:
    """The outcome of validating a file."""

    total: int = 0
    errors: list[BatchError] = field(default_factory=list)
    dropped: int = 0

    def add(
        self, code: str, message: str, line: int | None = None, param: str | None = None
    ) -> None:
        if len(self.errors) < MAX_REPORTED:
            self.errors.append(BatchError(code=code, message=message, line=line, param=param))
        else:
            self.dropped += 1


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if line:
                yield number, line


async def validate_file(path: Path, endpoint: str) -> Validation:
    """Check every line: JSON, fields, method, url matching the endpoint, unique custom_id,
    and the file limits."""
    result = Validation()
    size = path.stat().st_size  # noqa: ASYNC240  (one stat of a local temp file)
    if size > MAX_FILE_BYTES:
        result.add("file_too_large", f"input file is {size} bytes; the limit is {MAX_FILE_BYTES}")
        return result
    seen: set[str] = set()
    for number, line in _lines(path):
        if number % SLICE_LINES == 0:
            await asyncio.sleep(0)
        result.total += 1
        if result.total > MAX_LINES:
            result.add("too_many_requests", f"more than {MAX_LINES} requests in the file")
            break
        try:
            parsed = decode_json(_line_decoder, line)
        except msgspec.MsgspecError as exc:
            result.add("invalid_json_line", f"line {number}: {exc}", number)
            continue
        if parsed.method.upper() != "POST":
            result.add("invalid_method", f"line {number}: method must be POST", number, "method")
        if parsed.url != endpoint:
            result.add(
                "mismatched_url",
                f"line {number}: url {parsed.url!r} does not match the batch endpoint {endpoint!r}",
                number,
                "url",
            )
        if parsed.custom_id in seen:
            result.add(
                "duplicate_custom_id",
                f"line {number}: custom_id {parsed.custom_id!r} is used twice",
                number,
                "custom_id",
            )
        seen.add(parsed.custom_id)
    if result.total == 0:
        result.add("empty_file", "the input file has no requests")
    if result.dropped:
        result.add("more_errors", f"{result.dropped} more errors not listed")
    return result


def iter_lines(path: Path) -> Iterator[tuple[str, bytes]]:
    """``(custom_id, line)`` of a validated file, in file order."""
    for _, line in _lines(path):
        yield _line_decoder.decode(line).custom_id, line
