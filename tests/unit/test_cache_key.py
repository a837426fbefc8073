"""Cache keys: canonical, complete over output-affecting fields, blind to the rest."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from broker.cache.key import LONG_TEXT, _text_digest, cache_key
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


LONG = "word " * 1000  # over LONG_TEXT characters: keyed by its digest


def _with_user(content: object) -> str:
    return key({"model": "m", "messages": [{"role": "user", "content": content}]})


def test_long_texts_key_by_their_content() -> None:
    """A long prompt keys the same whatever its JSON spelling, and any change to it (one
    character, in a text or in a content part) changes the key."""
    spelled = json.dumps({"model": "m", "messages": [{"role": "user", "content": LONG}]})
    escaped = spelled.replace("word", "\\u0077ord")
    assert key(spelled.encode()) == key(escaped.encode()) == _with_user(LONG)
    assert _with_user(LONG) != _with_user(LONG[:-1] + "!")
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 8000}}]
    other = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + "B" * 8000}}]
    assert _with_user(image) != _with_user(other)
    assert _with_user(image) == _with_user(json.loads(json.dumps(image)))


def test_a_literal_digest_never_keys_like_the_long_text_it_names() -> None:
    """The digest that stands in for a long text, sent as a short text, is another key."""
    assert len(_text_digest(LONG)) < LONG_TEXT
    assert _with_user(_text_digest(LONG)) != _with_user(LONG)
    two = [{"type": "text", "text": LONG}, {"type": "text", "text": _text_digest(LONG)}]
    swapped = [{"type": "text", "text": _text_digest(LONG)}, {"type": "text", "text": LONG}]
    assert _with_user(two) != _with_user(swapped)
