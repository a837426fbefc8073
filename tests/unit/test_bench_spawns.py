"""The benchmarks start the services the way an operator does: every module a benchmark
spawns with ``python -m`` exists and runs as a program (a command renamed in the product
must not leave the benchmarks starting nothing)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench"
#: ``spawn("module", ...)``, ``[sys.executable, "-m", "module", ...]`` and the deployment's
#: own argument list, whose first item is the module.
_SPAWNED = re.compile(r'spawn\(\s*"([\w.]+)"|"-m",\s*"([\w.]+)"|return \[\s*"([\w.]+)",')


def spawned_modules() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(BENCH.glob("*.py")):
        for match in _SPAWNED.finditer(path.read_text()):
            module = next(group for group in match.groups() if group)
            found.setdefault(module, set()).add(path.name)
    return found


def test_every_module_a_benchmark_spawns_runs_as_a_program() -> None:
    modules = spawned_modules()
    assert "llm_edge" in modules  # the benchmarks start the product through its command
    for module, files in modules.items():
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations is not None:  # a package
            spec = importlib.util.find_spec(f"{module}.__main__")
        assert spec is not None, f"{sorted(files)} spawn `python -m {module}`, which is gone"
