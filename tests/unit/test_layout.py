"""The house rules: which room may import which (read from the code's own imports).

| room           | may import of ours                                 |
|----------------|----------------------------------------------------|
| ``schemas``    | nothing                                            |
| ``edge_runtime`` | ``schemas``                                      |
| ``edge_client`` | ``schemas``                                       |
| ``workers``    | ``schemas``, ``edge_runtime``                      |
| ``edge_bridge`` | ``schemas``, ``edge_runtime``, ``edge_client``    |
| ``broker``     | ``schemas``, ``edge_runtime``, ``edge_client``     |
| ``llm_edge``   | everything (it is the front door)                  |

One named exception (:data:`EXCEPTIONS`): ``broker.config`` reads the configuration file's
``[providers]`` table with the workers' own settings class, so both roles read one file the
same way.

Inside the broker, a wing (admission, cache, upstream, tenancy, replies, batch, audit) never
imports the pipeline, the subject endpoints or the service: they call the wings, not the other
way round.
"""

from __future__ import annotations

import ast
import importlib.util
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
    "broker": {"schemas", "edge_runtime", "edge_client"},
    "llm_edge": OURS,
}
WINGS = ("admission", "cache", "upstream", "tenancy", "replies", "batch", "audit")
CONDUCTORS = {"broker.pipeline", "broker.endpoints", "broker.service"}
#: (importing file, imported module): the only imports across roles.
EXCEPTIONS = {(Path("broker/config.py"), "workers.config")}


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
        for name in imported_modules(path)
        if name.split(".")[0] in OURS
        and name.split(".")[0] not in allowed
        and not any(path.relative_to(ROOT) == f and name.startswith(m) for f, m in EXCEPTIONS)
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


def _loaded_after(statement: str) -> set[str]:
    """Every module a fresh interpreter holds after running ``statement``."""
    probe = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(out.stdout.split())


#: What no process but a broker loads: its metrics, the worker runner, the semantic tier.
BROKER_ONLY = ("broker.metrics", "workers.runner", "broker.cache.semantic", "broker.cache.embed")


def test_the_command_loads_no_role_until_a_command_runs() -> None:
    """``import llm_edge.cli`` loads no broker or worker module and no Prometheus client."""
    loaded = _loaded_after("import llm_edge.cli")
    assert (
        sorted(m for m in loaded if m.split(".")[0] in {"broker", "workers", "edge_bridge"}) == []
    )
    assert "prometheus_client" not in loaded


def test_reading_the_config_file_loads_no_broker_machinery() -> None:
    """A worker reads the shared configuration file without the broker's metrics, the worker
    runner or the semantic tier (``broker.config`` imports settings, never a wing's code)."""
    loaded = _loaded_after("import broker.config")
    assert [m for m in BROKER_ONLY if m in loaded] == []
    assert "prometheus_client" not in loaded


def test_thin_packages_export_what_they_list() -> None:
    """A lazily exporting ``__init__`` resolves every name of its ``__all__``, and only those."""
    import edge_bridge
    import workers

    for package in (workers, edge_bridge):
        assert sorted(package._HOMES) == sorted(package.__all__)
        for name in package.__all__:
            assert getattr(package, name) is not None
        with pytest.raises(AttributeError):
            _ = package.NoSuchName


def test_no_import_cycles() -> None:
    """No two modules of ours import each other, directly or round a loop (type-only imports
    count: a loop of types is a loop of concepts)."""
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts/import_graph.py")
    assert spec is not None
    assert spec.loader is not None
    graph = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graph)
    assert graph.cycles(graph.graph()) == []
