"""The ``llm-edge`` command's options: the environment is read at the entry point only."""

from __future__ import annotations

import pytest

from edge_client.request import DEFAULT_RETRY
from llm_edge.cli import _parser


def test_batch_api_key_comes_from_the_given_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``batch`` takes LLM_EDGE_API_KEY from the environment main() was given, not os.environ."""
    monkeypatch.setenv("LLM_EDGE_API_KEY", "from-os-environ")
    args = _parser({"LLM_EDGE_API_KEY": "k-given"}).parse_args(["batch", "list"])
    assert args.api_key == "k-given"
    assert _parser({}).parse_args(["batch", "list"]).api_key is None


@pytest.mark.parametrize(
    "argv",
    [
        ["broker"],
        ["worker", "mock"],
        ["bridge"],
        ["up"],
        ["cache", "purge", "--all"],
        ["breaker", "status"],
        ["batch", "list"],  # options of `batch` come before its sub-command
    ],
)
def test_every_command_takes_the_inbox_prefix(argv: list[str]) -> None:
    """Services and admin commands read replies under NATS_INBOX_PREFIX (or --inbox-prefix),
    so a NATS user allowed only its own inbox can run them; the default is _INBOX."""
    assert _parser({}).parse_args(argv).inbox_prefix == "_INBOX"
    given = _parser({"NATS_INBOX_PREFIX": "_INBOX.ops"}).parse_args(argv)
    assert given.inbox_prefix == "_INBOX.ops"
    at = 1 if argv[0] == "batch" else len(argv)
    flagged = _parser({}).parse_args([*argv[:at], "--inbox-prefix", "_INBOX.me", *argv[at:]])
    assert flagged.inbox_prefix == "_INBOX.me"


def test_the_bridge_retry_is_set_by_flag_or_environment() -> None:
    """``bridge`` sends a lost request again up to --attempts times, each waiting
    --attempt-timeout seconds (LLM_EDGE_BRIDGE_ATTEMPTS / _ATTEMPT_TIMEOUT_S); the producer
    client's policy by default."""
    default = _parser({}).parse_args(["bridge"])
    assert (default.attempts, default.attempt_timeout) == (
        DEFAULT_RETRY.attempts,
        DEFAULT_RETRY.attempt_timeout_s,
    )
    env = {"LLM_EDGE_BRIDGE_ATTEMPTS": "1", "LLM_EDGE_BRIDGE_ATTEMPT_TIMEOUT_S": "90"}
    assert _parser(env).parse_args(["bridge"]).attempts == 1
    assert _parser(env).parse_args(["bridge"]).attempt_timeout == 90.0
    flagged = _parser(env).parse_args(["bridge", "--attempts", "6", "--attempt-timeout", "5"])
    assert (flagged.attempts, flagged.attempt_timeout) == (6, 5.0)
