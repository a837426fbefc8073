"""Which lines of a batch go to a provider's own Batch API, in which sub-batches.

A batch is offloaded when its completion window is at least the providers' 24 hours, its
endpoint is chat completions, its tenant redacts no PII (the normal path does that), and
``offload`` resolves to ``auto``: a tenant's or a model's ``batch_offload`` overrides
``[batch] offload``, ``never`` winning. A line goes to its model's first deployment (lowest
``priority``); lines are grouped by deployment and split by the provider's limits (lines and
bytes per provider batch). Whether the provider has a Batch API is the workers' to say: the
lines of a provider none of whose workers answer ``llm.provider.<provider>.batch`` run on
the normal path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import msgspec

from broker.batch.settings import BatchSettings
from broker.tenancy.pii import PiiMode
from broker.tenancy.tenants import KeyRing
from broker.upstream.deployments import Deployment, ModelConfig
from schemas.batch import BatchOffload, BatchRecord, parse_window
from schemas.offload import SubBatch, receipt_object

__all__ = [
    "PROVIDER_WINDOW_S",
    "OffloadPlan",
    "Planner",
    "input_object",
    "objects",
    "results_object",
    "summary",
]

#: The completion window of OpenAI's and Anthropic's batches: ours must be at least this.
PROVIDER_WINDOW_S = 24 * 3600
CHAT = "/v1/chat/completions"


class _Body(msgspec.Struct):
    model: str = ""


class _Line(msgspec.Struct):
    body: _Body


_line = msgspec.json.Decoder(_Line)


def input_object(batch_id: str, index: int) -> str:
    """The files bucket's object holding sub-batch ``index``'s input lines."""
    return f"offload-{batch_id}-{index}"


def summary(subs: Iterable[SubBatch]) -> BatchOffload:
    """The batch object's ``offload``: how many lines went to each provider."""
    providers: dict[str, int] = {}
    for sub in subs:
        providers[sub.provider] = providers.get(sub.provider, 0) + sub.lines
    return BatchOffload(providers=providers)


def results_object(batch_id: str, index: int) -> str:
    """The object a worker writes sub-batch ``index``'s normalized results to."""
    return f"offload-{batch_id}-{index}-results"


def objects(batch_id: str, index: int) -> tuple[str, str, str]:
    """Every object sub-batch ``index`` writes to the files bucket: its input, its results
    and the worker's receipt (all dropped once it is merged, and when the batch ends)."""
    name = input_object(batch_id, index)
    return name, results_object(batch_id, index), receipt_object(name)


@dataclass
class _Open:
    sub: SubBatch
    handle: IO[bytes]
    size: int = 0


@dataclass
class OffloadPlan:
    """The sub-batches of one batch, written to files in ``folder`` while lines stream by."""

    folder: Path
    settings: BatchSettings
    subs: list[tuple[SubBatch, Path]] = field(default_factory=list)
    _open: dict[str, _Open] = field(default_factory=dict)

    def add(self, deployment: Deployment, model: str, line: bytes) -> None:
        """Put a line in its deployment's open sub-batch (a full one is closed first)."""
        max_lines, max_bytes = self.settings.limits(deployment.provider)
        current = self._open.get(deployment.name)
        if current is not None and (
            current.sub.lines >= max_lines or current.size + len(line) + 1 > max_bytes
        ):
            current.handle.close()
            current = None
        if current is None:
            index = len(self.subs)
            path = self.folder / f"offload-{index}.jsonl"
            sub = SubBatch(
                index=index,
                provider=deployment.provider,
                deployment=deployment.name,
                model=model,
                upstream_model=deployment.model,
                lines=0,
            )
            self.subs.append((sub, path))
            current = self._open[deployment.name] = _Open(sub, path.open("wb"))
        current.handle.write(line + b"\n")
        current.sub.lines += 1
        current.size += len(line) + 1

    def close(self) -> None:
        """Close every open sub-batch file."""
        for current in self._open.values():
            with contextlib.suppress(Exception):
                current.handle.close()
        self._open.clear()


class Planner:
    """Decides which lines are offloaded.

    Args:
        settings: the ``[batch]`` table.
        models: the configured models by name.
        keys: the tenants (their ``batch_offload`` and PII mode).
    """

    def __init__(
        self, settings: BatchSettings, models: Mapping[str, ModelConfig], keys: KeyRing | None
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._models: dict[str, ModelConfig] = {}
        for model in models.values():
            for name in (model.name, *model.aliases):
                self._models.setdefault(name, model)

    def eligible(self, record: BatchRecord) -> bool:
        """Whether any line of the batch may be offloaded (window, endpoint, tenant)."""
        batch = record.batch
        try:
            window = parse_window(batch.completion_window)
        except ValueError:
            return False
        if window < PROVIDER_WINDOW_S or batch.endpoint != CHAT:
            return False
        if self._keys is None:
            return True
        tenant = self._keys.named(record.tenant)
        return tenant.pii is PiiMode.OFF and tenant.batch_offload != "never"

    def target(self, record: BatchRecord, model_name: str) -> tuple[Deployment, str] | None:
        """The deployment a line of ``model_name`` is offloaded to, and the model's name."""
        model = self._models.get(model_name)
        if model is None:
            return None
        tenant = self._keys.named(record.tenant).batch_offload if self._keys else None
        words = (tenant, model.batch_offload)
        if "never" in words or ("auto" not in words and self._settings.offload != "auto"):
            return None
        return min(model.deployments, key=lambda d: d.priority), model.name

    def split(
        self, record: BatchRecord, lines: Iterable[tuple[str, bytes]], plan: OffloadPlan
    ) -> Iterator[tuple[str, bytes]]:
        """Yield the lines for the normal path; put the rest in ``plan``'s sub-batches."""
        eligible = self.eligible(record)
        for custom_id, line in lines:
            target = None
            if eligible:
                target = self.target(record, _line.decode(line).body.model)
            if target is None:
                yield custom_id, line
            else:
                plan.add(target[0], target[1], line)
        plan.close()
