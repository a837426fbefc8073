"""Print the import graph of the project's packages: modules, arrows, upward arrows, cycles.

    python scripts/import_graph.py            # summary
    python scripts/import_graph.py --arrows   # every arrow between packages, with counts

Reads the code's own imports (top level and inside functions, ``TYPE_CHECKING`` blocks
included) with :mod:`ast`; nothing is imported or run. A package's *floor* is its place in
the house: the wire contract at the bottom, the front door at the top. An arrow *runs
upward* when a module imports one on a higher floor, or a role imports another role.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Each package's floor: imports may go down (or sideways inside a package), never up.
FLOORS = {
    "schemas": 0,
    "edge_runtime": 1,
    "edge_client": 1,
    "workers": 2,
    "edge_bridge": 2,
    "broker": 2,
    "llm_edge": 3,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project's modules that ``path`` imports (the longest known prefix of each name)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for full in names:
            name = full
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
                break
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in FLOORS for p in (ROOT / pkg).rglob("*.py")}
    modules = set(files)
    return {m: imports_of(p, modules) - {m} for m, p in sorted(files.items())}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    return found


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Arrows into a higher floor, or from one role into another."""
    out = []
    for src, targets in edges.items():
        a = src.split(".")[0]
        for dst in targets:
            b = dst.split(".")[0]
            if a != b and (FLOORS[b] > FLOORS[a] or FLOORS[b] == FLOORS[a]):
                out.append((src, dst))
    return sorted(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrows", action="store_true", help="arrows between packages")
    args = parser.parse_args()
    edges = graph()
    found = cycles(edges)
    up = upward(edges)
    print(f"modules: {len(edges)}")
    print(f"import arrows: {sum(len(t) for t in edges.values())}")
    print(f"arrows that run upward or across roles: {len(up)}")
    for src, dst in up:
        print(f"  {src} -> {dst}")
    print(f"cycles: {len(found)}")
    for component in found:
        print(f"  {' <-> '.join(component)}")
    if args.arrows:
        between = Counter(
            (s.split(".")[0], d.split(".")[0])
            for s, ts in edges.items()
            for d in ts
            if s.split(".")[0] != d.split(".")[0]
        )
        for (a, b), n in sorted(between.items()):
            print(f"  {a} -> {b}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
