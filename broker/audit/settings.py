"""The ``[audit]`` table: whether brokers keep the audit trail, and how long it is kept."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_runtime.tables import check_keys

__all__ = [
    "DEFAULT_MAX_AGE_DAYS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PENDING",
    "AuditSettings",
]

#: A year of admin actions: what audits usually ask to be able to look back on.
DEFAULT_MAX_AGE_DAYS = 365.0
#: A record is about 500 bytes (496 for a console breaker command): 256 MiB holds some
#: 500,000 of them (the oldest go first).
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: Records a broker holds while JetStream cannot take them; past it, admin actions are refused.
DEFAULT_MAX_PENDING = 1000
_DAY_S = 86400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditSettings:
    """The ``[audit]`` table.

    Attributes:
        enabled: record admin actions in the audit stream.
        max_age_days: records older than this are removed (0: kept whatever their age).
        max_bytes: past this size the oldest records are removed (0: no bound).
        max_pending: records a broker holds while JetStream is unavailable.
    """

    enabled: bool = True
    max_age_days: float = DEFAULT_MAX_AGE_DAYS
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pending: int = DEFAULT_MAX_PENDING

    @property
    def max_age_s(self) -> float:
        """:attr:`max_age_days` in seconds (JetStream's unit)."""
        return self.max_age_days * _DAY_S

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> AuditSettings:
        """Build from the ``[audit]`` table.

        Raises:
            ValueError: a value of the wrong type or out of range, naming the key.
        """
        check_keys("audit", raw, {"enabled", "max_age_days", "max_bytes", "max_pending"})
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            raise TypeError("audit.enabled must be true or false")
        age = raw.get("max_age_days", DEFAULT_MAX_AGE_DAYS)
        size = raw.get("max_bytes", DEFAULT_MAX_BYTES)
        pending = raw.get("max_pending", DEFAULT_MAX_PENDING)
        if isinstance(age, bool) or not isinstance(age, int | float) or age < 0:
            raise ValueError("audit.max_age_days must be a number >= 0 (0: no age limit)")
        for name, value, least in (("max_bytes", size, 0), ("max_pending", pending, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"audit.{name} must be an integer >= {least}")
        return cls(enabled=enabled, max_age_days=float(age), max_bytes=size, max_pending=pending)
