"""Thin package ``__init__``s: public names imported from their modules on first use.

A package lists its public surface in ``__all__`` as usual, but importing the package loads
none of it, so a process that needs one small module of a role (a worker reading its
settings, a bridge) does not load the rest (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``package``: ``homes`` maps each public name to the submodule
    that defines it (``{"WorkerService": "runner"}``)."""

    def attribute(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{home}"), name)

    return attribute
