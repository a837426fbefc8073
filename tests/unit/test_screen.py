"""PII screening of request bodies in either API: what is screened, and what is left alone."""

from __future__ import annotations

import msgspec
import pytest

from broker.errors import PiiBlocked
from broker.tenancy.pii import PiiMode
from broker.tenancy.screen import screen
from schemas.api import Api

MESSAGES = {
    "model": "m",
    "max_tokens": 10,
    "system": [{"type": "text", "text": "Escalate to ops@example.com", "cache_control": {}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": "owner: ann@example.com"},
                {"type": "image", "source": {"type": "base64", "data": "ann@example.com"}},
            ],
        }
    ],
}


def test_an_anthropic_body_has_its_system_prompt_and_tool_results_redacted() -> None:
    """The system prompt and a tool result's text are a person's texts; an image's data and
    every other field stay as sent."""
    screened = screen(msgspec.json.encode(MESSAGES), PiiMode.REDACT, Api.MESSAGES)
    assert screened is not None
    body, redacted = screened
    sent = msgspec.json.decode(body)
    assert sent["system"][0] == {
        "type": "text",
        "text": "Escalate to [EMAIL_1]",
        "cache_control": {},
    }
    assert sent["messages"][0]["content"][0]["content"] == "owner: [EMAIL_2]"
    assert sent["messages"][0]["content"][1] == MESSAGES["messages"][0]["content"][1]
    assert redacted == {"ops@example.com": "[EMAIL_1]", "ann@example.com": "[EMAIL_2]"}


def test_blocking_names_where_the_pii_is_and_a_clean_body_is_left_alone() -> None:
    """Block mode names the system prompt; a body without PII comes back as ``None``."""
    with pytest.raises(PiiBlocked) as caught:
        screen(msgspec.json.encode(MESSAGES), PiiMode.BLOCK, Api.MESSAGES)
    assert caught.value.param == "system"
    clean = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    assert screen(msgspec.json.encode(clean), PiiMode.REDACT, Api.CHAT) is None
