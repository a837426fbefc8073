"""The checked-in AsyncAPI document matches the wire contract."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.asyncapi import asyncapi_document

DOC = Path(__file__).parents[2] / "docs" / "asyncapi.json"


def test_asyncapi_document_is_current() -> None:
    """docs/asyncapi.json is what scripts/asyncapi generates now (regenerate when it fails)."""
    assert json.loads(DOC.read_text()) == json.loads(json.dumps(asyncapi_document()))


def test_document_describes_the_chat_subject() -> None:
    """llm.chat carries ChatRequest with its headers; replies include chunks and errors."""
    doc = asyncapi_document()
    assert doc["channels"]["chat"]["address"] == "llm.chat"
    request = doc["components"]["messages"]["ChatRequest"]
    assert "Authorization" in request["headers"]["properties"]
    assert "messages" in doc["components"]["schemas"]["ChatRequest"]["properties"]
    assert set(doc["channels"]["reply"]["messages"]) == {"completion", "chunk", "end", "error"}
