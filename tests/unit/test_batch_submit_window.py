"""The worker's side of exactly-once offload submission: no provider batch is created after
the broker's submit window, and Anthropic results map back through tagged custom_ids."""

from __future__ import annotations

import time

import pytest

from workers.batch_anthropic import line_of
from workers.batches import check_window
from workers.errors import ProviderError


def test_no_provider_batch_is_created_after_the_submit_window() -> None:
    """A submit whose window has passed is refused (retryable); one within it, or without a
    window, goes on."""
    check_window("openai", time.time() + 60)
    check_window("openai", 0.0)
    with pytest.raises(ProviderError) as caught:
        check_window("openai", time.time() - 1)
    assert caught.value.kind.retryable


@pytest.mark.parametrize(
    ("custom_id", "line"),
    [("offload-batch_Ab12-0-17", 17), ("r5", 5), ("offload-batch_Ab12-3-x", None), ("zz", None)],
)
def test_anthropic_custom_ids_carry_the_tag_and_the_line(custom_id: str, line: int | None) -> None:
    """``<tag>-<i>`` (and ``r<i>``, from before tags) name line ``i``; anything else none."""
    assert line_of(custom_id) == line
