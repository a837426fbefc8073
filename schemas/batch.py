"""The Batch API's objects as OpenAI defines them, plus the record we keep per batch."""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any

import msgspec

from schemas.offload import OffloadState, SubBatch

__all__ = [
    "FINAL_STATUSES",
    "MAX_FILE_BYTES",
    "BatchError",
    "BatchErrors",
    "BatchObject",
    "BatchOffload",
    "BatchRecord",
    "BatchResponse",
    "BatchResultLine",
    "BatchStatus",
    "BatchSubmit",
    "FileObject",
    "FileRequest",
    "InputLine",
    "RequestCounts",
    "StoredFile",
    "parse_window",
]


#: OpenAI's limit on one batch input file.
MAX_FILE_BYTES = 200 * 1024 * 1024


class BatchStatus(enum.StrEnum):
    """OpenAI's batch statuses."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)


class RequestCounts(msgspec.Struct):
    """``request_counts``."""

    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(msgspec.Struct):
    """One validation error."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(msgspec.Struct):
    """``errors``: ``{"object": "list", "data": [...]}``."""

    data: list[BatchError]
    object: str = "list"


class BatchOffload(msgspec.Struct):
    """Our extension of the batch object: where its lines run.

    Attributes:
        providers: lines sent to each provider's own Batch API.
        completed: of those, lines whose provider result was merged back.
        fallback: lines re-run on the normal path (a provider batch that failed, expired,
            would miss the window, or lines it did not complete).
    """

    providers: dict[str, int] = msgspec.field(default_factory=dict)
    completed: dict[str, int] = msgspec.field(default_factory=dict)
    fallback: int = 0


class BatchObject(msgspec.Struct):
    """The batch object of ``/v1/batches``."""

    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    created_at: int
    expires_at: int | None = None
    errors: BatchErrors | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = msgspec.field(default_factory=RequestCounts)
    metadata: dict[str, str] | None = None
    object: str = "batch"
    offload: BatchOffload | None = None


class BatchRecord(msgspec.Struct):
    """What the batches bucket stores: the public object and the engine's own fields.

    Attributes:
        lease_until: unix time until which one broker owns validation or finalization
            (renewed while the step runs, released when it fails).
        lease_owner: the claim holding the lease (a token per claim).
        tenant: whose batch it is.
        priority: ``high``, ``normal`` or ``low`` (``Llm-Priority``, capped by the tenant).
        offload: the provider batches its lines were sent to (:mod:`broker.batch.offload`).
        offload_next: unix time of the next look at them.
    """

    batch: BatchObject
    lease_until: float = 0.0
    tenant: str = "default"
    lease_owner: str = ""
    priority: str = "normal"
    offload: list[SubBatch] = msgspec.field(default_factory=list)
    offload_next: float = 0.0

    @property
    def offloading(self) -> bool:
        """Whether a provider batch is still to be submitted, watched or merged."""
        return any(sub.state is not OffloadState.MERGED for sub in self.offload)


class FileObject(msgspec.Struct):
    """The file object of ``/v1/files``."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    object: str = "file"
    status: str = "processed"
    status_details: str | None = None


class StoredFile(FileObject):
    """A file object as the object store keeps it: with the tenant that owns the file."""

    owner: str = "default"

    def public(self) -> FileObject:
        """The ``/v1/files`` object (without the owner)."""
        return FileObject(**{f: getattr(self, f) for f in FileObject.__struct_fields__})


class FileRequest(msgspec.Struct, omit_defaults=True):
    """``llm.batch.file.get`` (``id``) and ``llm.batch.file.content`` (``id`` and the piece:
    ``length`` bytes from ``offset``; the broker sends less when the piece would not fit the
    server's ``max_payload``, and none at the end of the file)."""

    id: str
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0
    length: Annotated[int, msgspec.Meta(ge=1)] | None = None


class InputLine(msgspec.Struct):
    """One line of a batch input file."""

    custom_id: str
    method: str
    url: str
    body: dict[str, Any]


class BatchResponse(msgspec.Struct):
    """The answer to one batch line: the status and body the line's request got."""

    status_code: int
    request_id: str
    body: dict[str, Any]


class BatchLineError(msgspec.Struct):
    """Why a batch line got no answer at all (an engine failure, an expired batch)."""

    code: str
    message: str


class BatchResultLine(msgspec.Struct):
    """One line of a batch's output or error file."""

    id: str
    custom_id: str
    response: BatchResponse | None = None
    error: BatchLineError | None = None


class BatchSubmit(msgspec.Struct, omit_defaults=True):
    """``llm.batch.submit``: create a batch from inline lines (or an uploaded file's id)."""

    endpoint: str
    completion_window: str
    lines: list[InputLine] | None = None
    input_file_id: str | None = None
    metadata: dict[str, str] | None = None


_WINDOW = re.compile(r"^(\d+)(h|d)$")
#: Longest completion window we accept (OpenAI offers 24h; we allow up to 7 days).
MAX_WINDOW_S = 7 * 24 * 3600


def parse_window(window: str) -> int:
    """Seconds in a completion window like ``24h`` or ``7d``.

    Raises:
        ValueError: not of that form, or outside 1h..7d.
    """
    match = _WINDOW.match(window)
    if not match:
        raise ValueError(f"completion_window must look like 24h or 7d, not {window!r}")
    seconds = int(match.group(1)) * (3600 if match.group(2) == "h" else 86400)
    if not 3600 <= seconds <= MAX_WINDOW_S:
        raise ValueError("completion_window must be between 1h and 7d")
    return seconds
