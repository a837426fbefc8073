"""The house rules: which room may import which (read from the code's own imports).

| room           | may import of ours                                 |
|----------------|----------------------------------------------------|
| ``schemas``    | nothing                                            |
| ``edge_runtime`` | ``schemas``                                      |
| ``edge_client`` | ``schemas``                                       |
| ``workers``    | ``schemas``, ``edge_runtime``                      |
| ``edge_bridge`` | ``schemas``, ``edge_runtime``, ``edge_client``    |
| ``broker``     | everything but the other roles and the front door  |
| ``llm_edge``   | everything (it is the front door)                  |

Inside the broker, a wing (cache, upstream, tenancy, replies, batch) never imports the
pipeline, the subject endpoints or the service: they call the wings, not the other way round.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"schemas", "edge_runtime", "edge_client", "workers", "edge_bridge", "broker", "llm_edge"}
ALLOWED = {
    "schemas": set(),
    "edge_runtime": {"schemas"},
    "edge_client": {"schemas"},
    "workers": {"schemas", "edge_runtime"},
    "edge_bridge": {"schemas", "edge_runtime", "edge_client"},
    "broker": {"schemas", "edge_runtime", "edge_client", "workers"},
    "llm_edge": OURS,
}
WINGS = ("cache", "upstream", "tenancy", "replies", "batch")
CONDUCTORS = {"broker.pipeline", "broker.endpoints", "broker.service"}
#: ``python -m broker`` keeps working for one release by handing over to the front door.
SHIMS = {Path("broker/__main__.py")}


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports, at the top or inside a function."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def files_of(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_rooms_import_only_what_they_may(package: str) -> None:
    """A role never imports another role; schemas and the plumbing import nothing above them."""
    allowed = ALLOWED[package] | {package}
    offences = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files_of(package)
        if path.relative_to(ROOT) not in SHIMS
        for name in imported_modules(path)
        if name.split(".")[0] in OURS and name.split(".")[0] not in allowed
    ]
    assert offences == []


@pytest.mark.parametrize("wing", WINGS)
def test_wings_never_import_the_conductor(wing: str) -> None:
    """The pipeline calls the wings; a wing calling back up into it is in the wrong room."""
    offences = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files_of(f"broker/{wing}")
        for name in imported_modules(path)
        if any(name == c or name.startswith(c + ".") for c in CONDUCTORS)
    ]
    assert offences == []


def test_the_rule_catches_a_wrong_import(tmp_path: Path) -> None:
    """The checker itself sees function-level imports (where shortcuts hide)."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from broker.pipeline import ChatPipeline\n")
    assert "broker.pipeline" in imported_modules(sample)


@pytest.mark.parametrize(
    "module",
    ["schemas", "edge_client", "workers", "edge_bridge", "llm_edge.cli", "broker"],
)
def test_light_roles_do_not_load_the_broker_stack(module: str) -> None:
    """Producers, workers, the bridge and the command load no FastStream, tenacity or redis."""
    probe = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('faststream', 'tenacity', 'redis') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
