"""Cache keys: canonical, complete over output-affecting fields, blind to the rest."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from broker.cache.key import cache_key
from schemas import decode_chat_request, request_extras

BASE: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    ],
    "temperature": 0.5,
}


def key(body: dict[str, Any] | bytes, model: str = "m", namespace: str = "default:default") -> str:
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return cache_key(decode_chat_request(raw), request_extras(raw), model, namespace)


def test_json_key_order_and_number_form_do_not_matter() -> None:
    """Reordered object keys (top level and inside messages) and 1 vs 1.0 give the same key."""
    a = (
        b'{"model":"gpt-4o-mini","temperature":1,"messages":[{"role":"user",'
        b'"content":[{"type":"text","text":"hi"}]}]}'
    )
    b = (
        b'{"messages":[{"content":[{"text":"hi","type":"text"}],"role":"user"}],'
        b'"temperature":1.0,"model":"gpt-4o-mini"}'
    )
    assert key(a) == key(b)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.6},
        {"top_p": 0.9},
        {"n": 2},
        {"stop": ["\n"]},
        {"max_tokens": 5},
        {"max_completion_tokens": 5},
        {"presence_penalty": 0.1},
        {"frequency_penalty": 0.1},
        {"seed": 7},
        {"logit_bias": {"50256": -100}},
        {"response_format": {"type": "json_object"}},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tool_choice": "none"},
        {"messages": [{"role": "user", "content": "hi!"}]},
        {"reasoning_effort": "high"},
    ],
)
def test_every_output_affecting_field_changes_the_key(change: dict[str, Any]) -> None:
    """Changing any field that can change the answer (passthrough fields too) changes the key."""
    assert key({**BASE, **change}) != key(BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"user": "u-1"},
        {"metadata": {"team": "a"}},
        {"stream": True},
        {"stream_options": {"include_usage": True}},
        {"model": "gpt-4o-mini-2024-07-18"},
    ],
)
def test_fields_that_cannot_change_the_answer_share_the_entry(change: dict[str, Any]) -> None:
    """user, metadata, stream and the alias used do not split entries (key uses the model)."""
    assert key({**BASE, **change}) == key(BASE)


def test_namespaces_and_models_never_share() -> None:
    """Another namespace (tenant) or another resolved model gives another key."""
    assert key(BASE, namespace="tenant-a:default") != key(BASE, namespace="tenant-b:default")
    assert key(BASE, model="m1") != key(BASE, model="m2")
    assert key(BASE, namespace="t:ns").startswith("t:ns:")
