"""Native batch offload: the broker asks a provider's workers to run a sub-batch on the
provider's own Batch API (``llm.provider.<provider>.batch``, request/reply).

The lines travel through the batch files' object store, not in messages: the broker writes a
sub-batch's input (our input lines, in order) as an object; the worker reads it, submits it
upstream, and, once the provider's batch has ended, writes the normalized results
(:class:`OffloadResult`, one JSON line each) as another object the broker merges.

Submission is exactly-once per sub-batch. The broker records its intent (state
``submitting``, ``submit_at``) in the batch record before it asks for a submit; the worker
creates no provider batch after the call's ``not_after`` and writes a receipt object (the
provider's batch id) before it answers. A broker that finds an intent but no provider batch
id (it died, or its call timed out, between the provider's acceptance and the record's write)
asks ``find`` instead of submitting again: the receipt, else the provider's list of batches
(:data:`SUBMIT_SETTLE_S` after the intent, a batch not found there was never created).
"""

from __future__ import annotations

import enum

import msgspec

__all__ = [
    "CLOCK_SKEW_S",
    "SUBMIT_SETTLE_S",
    "SUBMIT_WINDOW_S",
    "OffloadAnswer",
    "OffloadCall",
    "OffloadOp",
    "OffloadResult",
    "OffloadState",
    "SubBatch",
    "receipt_object",
]


#: How long after the broker's intent a worker may still create the provider batch (reading
#: the input and uploading up to 200 MB fit in it; the worker refuses to create one later).
SUBMIT_WINDOW_S = 600.0
#: How far the broker's and the workers' clocks may disagree.
CLOCK_SKEW_S = 60.0
#: After this long past the intent, a provider batch of it that the provider does not list
#: was never created: the window, the create call's own bound (120 s), the clocks' skew.
SUBMIT_SETTLE_S = SUBMIT_WINDOW_S + 120.0 + CLOCK_SKEW_S


def receipt_object(input_object: str) -> str:
    """The object holding the provider's batch id of the sub-batch ``input_object`` holds
    (the worker writes it before it answers a submit)."""
    return f"{input_object}-receipt"


class OffloadOp(enum.StrEnum):
    """What a call on ``llm.provider.<provider>.batch`` asks for."""

    SUBMIT = "submit"
    STATUS = "status"
    RESULTS = "results"
    CANCEL = "cancel"
    FIND = "find"


class OffloadCall(msgspec.Struct, omit_defaults=True):
    """One call on ``llm.provider.<provider>.batch``.

    Attributes:
        op: submit the lines of ``input``; find the provider batch a submit of ``input``
            created; read the status of, write the results of, or cancel ``provider_batch``.
        input: the object (files bucket) holding the sub-batch's input lines; its name is
            the sub-batch's tag upstream (``submit``, ``find``).
        upstream_model: the model name the provider knows (every line's ``model``).
        provider_batch: the provider's batch id (every op but ``submit`` and ``find``).
        results: the object the worker writes the normalized results to (``results``).
        not_after: unix time after which the worker creates no provider batch (``submit``).
        since: unix time of the submit's intent: the batch was created after it (``find``).
    """

    op: OffloadOp
    input: str = ""
    upstream_model: str = ""
    provider_batch: str = ""
    results: str = ""
    not_after: float = 0.0
    since: float = 0.0


class OffloadAnswer(msgspec.Struct, omit_defaults=True):
    """The worker's answer.

    Attributes:
        provider_batch: the provider's batch id (``find``: empty when the provider surely
            holds no batch of that submit).
        ended: the provider's batch is done (completed, failed, expired, cancelled, ended).
        provider_status: the provider's own status word.
        succeeded: lines the results object holds as succeeded (``results``).
        error: why the call failed (the other fields are then empty); ``status`` is its
            HTTP-like status (429: the provider rate-limited the call and created nothing;
            another 4xx: retrying cannot help).
        retry_after: seconds the provider asked us to wait before calling again (0: it did
            not say).
    """

    provider_batch: str = ""
    ended: bool = False
    provider_status: str = ""
    succeeded: int = 0
    error: str = ""
    status: int = 200
    retry_after: float = 0.0


class OffloadResult(msgspec.Struct, omit_defaults=True):
    """One normalized result line: line ``i`` of the sub-batch's input, its chat completion
    when it succeeded (``body``, raw JSON), else why not (it then runs on the normal path)."""

    i: int
    ok: bool
    body: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    error: str = ""


class OffloadState(enum.StrEnum):
    """Where a sub-batch is: not yet submitted, submitted without its provider batch id
    recorded yet, running at the provider, or merged back."""

    PENDING = "pending"
    SUBMITTING = "submitting"
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
        state: pending, submitting, running or merged.
        submit_at: unix time the submit's intent was recorded (``submitting``).
        retry_at: unix time before which a pending sub-batch is not submitted (the provider
            rate-limited its last submit; 0: at the next poll).
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
    submit_at: float = 0.0
    retry_at: float = 0.0
    provider_batch: str = ""
    cancel_sent: bool = False
    succeeded: int = 0
    fell_back: int = 0
