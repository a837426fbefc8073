"""Native batch offload: the broker asks a provider's workers to run a sub-batch on the
provider's own Batch API (``llm.provider.<provider>.batch``, request/reply).

The lines travel through the batch files' object store, not in messages: the broker writes a
sub-batch's input (our input lines, in order) as an object; the worker reads it, submits it
upstream, and, once the provider's batch has ended, writes the normalized results
(:class:`OffloadResult`, one JSON line each) as another object the broker merges.
"""

from __future__ import annotations

import enum

import msgspec

__all__ = [
    "OffloadAnswer",
    "OffloadCall",
    "OffloadOp",
    "OffloadResult",
    "OffloadState",
    "SubBatch",
]


class OffloadOp(enum.StrEnum):
    """What a call on ``llm.provider.<provider>.batch`` asks for."""

    SUBMIT = "submit"
    STATUS = "status"
    RESULTS = "results"
    CANCEL = "cancel"


class OffloadCall(msgspec.Struct, omit_defaults=True):
    """One call on ``llm.provider.<provider>.batch``.

    Attributes:
        op: submit the lines of ``input``; read the status of, write the results of, or
            cancel ``provider_batch``.
        input: the object (files bucket) holding the sub-batch's input lines.
        upstream_model: the model name the provider knows (every line's ``model``).
        provider_batch: the provider's batch id (every op but ``submit``).
        results: the object the worker writes the normalized results to (``results``).
    """

    op: OffloadOp
    input: str = ""
    upstream_model: str = ""
    provider_batch: str = ""
    results: str = ""


class OffloadAnswer(msgspec.Struct, omit_defaults=True):
    """The worker's answer.

    Attributes:
        provider_batch: the provider's batch id.
        ended: the provider's batch is done (completed, failed, expired, cancelled, ended).
        provider_status: the provider's own status word.
        succeeded: lines the results object holds as succeeded (``results``).
        error: why the call failed (the other fields are then empty); ``status`` is its
            HTTP-like status (4xx: retrying cannot help).
    """

    provider_batch: str = ""
    ended: bool = False
    provider_status: str = ""
    succeeded: int = 0
    error: str = ""
    status: int = 200


class OffloadResult(msgspec.Struct, omit_defaults=True):
    """One normalized result line: line ``i`` of the sub-batch's input, its chat completion
    when it succeeded (``body``, raw JSON), else why not (it then runs on the normal path)."""

    i: int
    ok: bool
    body: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    error: str = ""


class OffloadState(enum.StrEnum):
    """Where a sub-batch is: not yet submitted, running at the provider, or merged back."""

    PENDING = "pending"
    RUNNING = "running"
    MERGED = "merged"


class SubBatch(msgspec.Struct):
    """One provider batch of one of our batches, as the batch record keeps it.

    Attributes:
        index: its number within our batch (names its objects).
        provider: the provider (its workers run it).
        deployment: the deployment whose prices apply.
        model: the model the lines asked for; ``upstream_model`` the provider's name of it.
        lines: how many input lines it holds.
        state: pending, running or merged.
        provider_batch: the provider's batch id, once submitted.
        cancel_sent: a cancel was sent upstream (our cancel, or the window's margin).
        succeeded: lines merged from the provider's results.
        fell_back: lines re-queued on the normal path.
    """

    index: int
    provider: str
    deployment: str
    model: str
    upstream_model: str
    lines: int
    state: OffloadState = OffloadState.PENDING
    provider_batch: str = ""
    cancel_sent: bool = False
    succeeded: int = 0
    fell_back: int = 0
