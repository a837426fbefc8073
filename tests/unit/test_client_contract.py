"""One contract, three clients: the error tree, its status table and the header and subject
names are declared in schemas/ and docs/asyncapi.json; the Python client reads them, the Go
and TypeScript clients' contract files are generated from the document and must be current,
and neither client spells a header or subject name anywhere else."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edge_client import errors
from schemas.client_sources import go_source, ts_source
from schemas.errors import (
    CLIENT_ERROR_BY_STATUS,
    CLIENT_ERROR_FROM_500,
    CLIENT_ERROR_OTHERWISE,
    CLIENT_ERRORS,
)

ROOT = Path(__file__).parents[2]
DOC = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
GO_DIR = ROOT / "clients" / "go"
TS_SRC = ROOT / "clients" / "typescript" / "src"


def test_the_document_carries_the_error_table_of_schemas() -> None:
    """x-client-errors in docs/asyncapi.json is schemas/errors.py's tree and table."""
    table = DOC["x-client-errors"]
    assert {int(s): n for s, n in table["byStatus"].items()} == CLIENT_ERROR_BY_STATUS
    assert {n: (c["parent"], c["description"]) for n, c in table["classes"].items()} == (
        CLIENT_ERRORS
    )
    assert (table["fromStatus500"], table["otherwise"]) == (
        CLIENT_ERROR_FROM_500,
        CLIENT_ERROR_OTHERWISE,
    )


@pytest.mark.parametrize(
    ("path", "generate"),
    [
        (GO_DIR / "contract.go", go_source),
        (TS_SRC / "contract.ts", ts_source),
    ],
    ids=["go", "typescript"],
)
def test_each_clients_contract_file_is_what_the_document_generates(
    path: Path, generate: object
) -> None:
    """clients/go/contract.go and clients/typescript/src/contract.ts are current (run
    scripts/asyncapi when this fails)."""
    assert callable(generate)
    assert path.read_text() == generate(DOC)


def test_the_python_client_raises_the_contracts_tree() -> None:
    """Every class of the contract is edge_client.errors' class of that name, under the same
    parent, and each status raises the class the table names."""
    for name, (parent, _) in CLIENT_ERRORS.items():
        cls = errors.CLASSES[name]
        assert cls.__name__ == name
        assert (cls.__bases__[0].__name__ if parent else None) in {parent, "Exception"}
    for status in [*CLIENT_ERROR_BY_STATUS, 418, 500, 502, 599]:
        want = CLIENT_ERROR_BY_STATUS.get(
            status, CLIENT_ERROR_FROM_500 if status >= 500 else CLIENT_ERROR_OTHERWISE
        )
        assert type(errors.from_reply(status, b"{}")).__name__ == want


def _names() -> set[str]:
    """Every header and client subject the document names."""
    messages = DOC["components"]["messages"]
    names = set()
    for message in ("ChatRequest", "ChatCompletion"):
        names |= set(messages[message]["headers"]["properties"])
    names |= {c["address"] for c in DOC["channels"].values() if c["address"]}
    return names


def _sources() -> list[Path]:
    go = [p for p in GO_DIR.glob("*.go") if not p.name.endswith("_test.go")]
    ts = [p for p in TS_SRC.glob("*.ts") if p.name != "types.ts"]
    return [p for p in go + ts if p.name not in {"contract.go", "contract.ts"}]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.name)
def test_no_client_spells_a_header_or_a_subject_outside_its_contract_file(path: Path) -> None:
    """Header and subject names come from the generated constants, never from a literal."""
    text = path.read_text()
    spelled = sorted(name for name in _names() if re.search(rf"[\"']{re.escape(name)}[\"']", text))
    assert spelled == [], f"{path.name} spells {spelled}: use the contract's constants"


def test_the_go_example_of_the_docs_is_the_one_the_tests_run() -> None:
    """The ```go block of docs/clients.md is clients/go/example/main.go (which
    tests/integration/test_go_client.py runs against a real stack)."""
    page = (ROOT / "docs" / "clients.md").read_text()
    block = re.search(r"### Go client.*?```go\n(.*?)```", page, re.DOTALL)
    assert block is not None
    assert block.group(1) == (GO_DIR / "example" / "main.go").read_text()
