"""The ``llm-edge`` command's options: the environment is read at the entry point only."""

from __future__ import annotations

import pytest

from llm_edge.cli import _parser


def test_batch_api_key_comes_from_the_given_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``batch`` takes LLM_EDGE_API_KEY from the environment main() was given, not os.environ."""
    monkeypatch.setenv("LLM_EDGE_API_KEY", "from-os-environ")
    args = _parser({"LLM_EDGE_API_KEY": "k-given"}).parse_args(["batch", "list"])
    assert args.api_key == "k-given"
    assert _parser({}).parse_args(["batch", "list"]).api_key is None
