"""Which batch lines go to a provider's own Batch API, and how they are split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.batch.offload_plan import OffloadPlan, Planner
from broker.batch.settings import BatchSettings
from broker.tenancy.tenants import KeyRing, TenantConfig
from broker.upstream.deployments import model_from_mapping
from schemas.batch import BatchObject, BatchRecord, BatchStatus

MODELS = {
    "gpt": model_from_mapping("gpt", {"deployments": [{"provider": "openai"}]}),
    "local": model_from_mapping(
        "local", {"deployments": [{"provider": "mock"}], "batch_offload": "never"}
    ),
}


def record(window: str = "24h", tenant: str = "default") -> BatchRecord:
    batch = BatchObject(
        id="b1",
        endpoint="/v1/chat/completions",
        input_file_id="f",
        completion_window=window,
        status=BatchStatus.VALIDATING,
        created_at=0,
    )
    return BatchRecord(batch=batch, tenant=tenant)


def line(i: int, model: str) -> tuple[str, bytes]:
    body = {"model": model, "messages": [{"role": "user", "content": "x" * 10}]}
    return f"c{i}", json.dumps({"custom_id": f"c{i}", "body": body}).encode()


def test_lines_split_by_the_providers_line_limit(tmp_path: Path) -> None:
    """Five gpt lines with a 2-line limit make sub-batches of 2, 2 and 1; a model that says
    never stays on the normal path."""
    settings = BatchSettings.from_mapping(
        {"offload": "auto", "offload_limits": {"default": [2, 10_000]}}
    )
    plan = OffloadPlan(tmp_path, settings)
    lines = [line(i, "gpt") for i in range(5)] + [line(9, "local")]
    normal = list(Planner(settings, MODELS, None).split(record(), lines, plan))
    assert [c for c, _ in normal] == ["c9"]
    assert [sub.lines for sub, _ in plan.subs] == [2, 2, 1]
    assert {sub.provider for sub, _ in plan.subs} == {"openai"}


def test_lines_split_by_the_providers_byte_limit(tmp_path: Path) -> None:
    """A sub-batch never holds more bytes than the limit."""
    size = len(line(0, "gpt")[1]) + 1
    settings = BatchSettings.from_mapping(
        {"offload": "auto", "offload_limits": {"default": [100, size * 3]}}
    )
    plan = OffloadPlan(tmp_path, settings)
    list(Planner(settings, MODELS, None).split(record(), [line(i, "gpt") for i in range(7)], plan))
    assert [sub.lines for sub, _ in plan.subs] == [3, 3, 1]


@pytest.mark.parametrize(
    ("fleet", "tenant", "window", "offloaded"),
    [
        ("never", None, "24h", False),
        ("auto", None, "24h", True),
        ("auto", None, "12h", False),  # shorter than the providers' window
        ("auto", "never", "24h", False),
        ("never", "auto", "48h", True),
    ],
)
def test_offload_setting_resolves_never_first(
    tmp_path: Path, fleet: str, tenant: str | None, window: str, offloaded: bool
) -> None:
    """A tenant's batch_offload overrides the fleet's; a window under 24h never offloads."""
    settings = BatchSettings.from_mapping({"offload": fleet})
    raw = {} if tenant is None else {"batch_offload": tenant}
    keys = KeyRing(tenants={"acme": TenantConfig.from_mapping("acme", raw)})
    plan = OffloadPlan(tmp_path, settings)
    normal = list(
        Planner(settings, MODELS, keys).split(record(window, "acme"), [line(0, "gpt")], plan)
    )
    assert bool(plan.subs) is offloaded
    assert len(normal) == (0 if offloaded else 1)


def test_bad_offload_words_are_refused() -> None:
    """Only auto and never are offload settings."""
    with pytest.raises(ValueError, match="auto or never"):
        BatchSettings.from_mapping({"offload": "always"})
