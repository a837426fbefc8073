"""The checked-in AsyncAPI document matches the wire contract."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from schemas import subjects
from schemas.asyncapi import asyncapi_document

DOC = Path(__file__).parents[2] / "docs" / "asyncapi.json"


def test_asyncapi_document_is_current() -> None:
    """docs/asyncapi.json is what scripts/asyncapi generates now (regenerate when it fails)."""
    assert json.loads(DOC.read_text()) == json.loads(json.dumps(asyncapi_document()))


def test_document_describes_the_chat_subject() -> None:
    """llm.chat carries ChatRequest with its headers; replies include chunks, errors and
    embeddings lists (llm.embeddings carries EmbeddingsRequest)."""
    doc = asyncapi_document()
    assert doc["channels"]["chat"]["address"] == "llm.chat"
    request = doc["components"]["messages"]["ChatRequest"]
    assert "Authorization" in request["headers"]["properties"]
    assert "messages" in doc["components"]["schemas"]["ChatRequest"]["properties"]
    assert doc["channels"]["embeddings"]["address"] == "llm.embeddings"
    assert "input" in doc["components"]["schemas"]["EmbeddingsRequest"]["properties"]
    assert set(doc["channels"]["reply"]["messages"]) == {
        "completion",
        "chunk",
        "end",
        "error",
        "json",
        "embeddings",
        "filePiece",
    }


def _addresses() -> list[str]:
    return [c["address"] for c in asyncapi_document()["channels"].values() if c["address"]]


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in subjects.__all__
        if n.isupper() and not n.endswith("_QUEUE") and n != "DEFAULT_TENANT"
    ],
)
def test_every_subject_is_in_the_document(name: str) -> None:
    """Each subject of schemas/subjects.py is a channel (a prefix: some channel under it)."""
    subject = getattr(subjects, name).replace("*", "{tenant}")
    assert any(a == subject or a.startswith(subject + ".") for a in _addresses())


TS_DIR = Path(__file__).parents[2] / "clients" / "typescript"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.node
def test_document_passes_the_official_asyncapi_parser() -> None:
    """@asyncapi/parser (npm) finds no error in docs/asyncapi.json."""
    assert (TS_DIR / "node_modules" / "@asyncapi" / "parser").is_dir(), (
        "run `npm ci` in clients/typescript (scripts/dev test does)"
    )
    done = subprocess.run(
        ["node", str(TS_DIR / "scripts" / "validate-asyncapi.mjs"), str(DOC)],
        cwd=TS_DIR,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
