"""Checks shared by every configuration table parser."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

__all__ = ["check_keys", "field_names", "typed_values"]


def field_names(cls: type) -> set[str]:
    """The field names of a dataclass: the keys its table may hold."""
    return {f.name for f in fields(cls)}


def check_keys(where: str, raw: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse keys the table does not know (typos must not pass silently).

    Raises:
        ValueError: naming the table and the unknown keys.
    """
    unknown = set(raw) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")


def typed_values(cls: type, where: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check the keys of a table of scalars and convert each value to its default's type
    (TOML writes ``5`` where a float is meant)."""
    check_keys(where, raw, field_names(cls))
    defaults = cls()
    return {k: type(getattr(defaults, k))(v) for k, v in raw.items()}
