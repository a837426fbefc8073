"""The cache wing's settings: the ``[cache]`` table and its ``[cache.semantic]`` table.

Plain values with their named defaults, read by :mod:`broker.config` without loading a
cache tier (no metrics, no NATS, no embedding model).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.cache.decision import DEFAULT_TARGET_ERROR_RATE, rung_for
from edge_runtime.tables import check_keys, field_names
from schemas.jetstream import SEMANTIC_BUCKET

#: The entries one broker's semantic index holds by default (about 230 MiB).
DEFAULT_MAX_ENTRIES = 100_000

__all__ = [
    "DEFAULT_EMBEDDINGS_L1_MAX_BYTES",
    "DEFAULT_EMBEDDINGS_L1_MAX_ENTRIES",
    "DEFAULT_L1_MAX_BYTES",
    "DEFAULT_L1_MAX_ENTRIES",
    "DEFAULT_L1_TTL_S",
    "DEFAULT_L2_NATS_MAX_BYTES",
    "DEFAULT_L2_TIMEOUT_S",
    "DEFAULT_L2_TTL_S",
    "DEFAULT_TARGET_ERROR_RATE",
    "CacheSettings",
    "L2Kind",
    "NondeterministicPolicy",
    "SemanticSettings",
]

DEFAULT_L1_MAX_ENTRIES = 1000
DEFAULT_L1_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_L1_TTL_S = 300.0
DEFAULT_L2_TTL_S = 3600.0
DEFAULT_L2_TIMEOUT_S = 0.05
#: Vectors one broker keeps in process: a vector is 8 KB (1,536 dimensions in base64) to 30 KB
#: (as JSON floats), so the byte bound is the one that binds for the common models.
DEFAULT_EMBEDDINGS_L1_MAX_ENTRIES = 20_000
DEFAULT_EMBEDDINGS_L1_MAX_BYTES = 64 * 1024 * 1024
#: Bytes the NATS L2 bucket may hold before its oldest entries are dropped.
DEFAULT_L2_NATS_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class SemanticSettings:
    """The ``[cache.semantic]`` table: ``models`` and ``tenants`` empty mean all."""

    enabled: bool = False
    #: Picks the rule: the verifier from 0.020 up (the anchors measure a lower recall).
    target_error_rate: float = DEFAULT_TARGET_ERROR_RATE
    #: The cosine floor; unset: the rule's own (0.75 verified, 0.90 anchored).
    threshold: float | None = None
    models: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()
    bucket: str = SEMANTIC_BUCKET
    #: The most entries each broker's index holds (about 2.3 KB each); past it, the entries
    #: closest to expiry leave first.
    max_entries: int = DEFAULT_MAX_ENTRIES
    #: The shared bucket's bound in bytes (an entry is about 2 KB there); when it is full, its
    #: oldest entries are dropped (brokers' indexes drop them by expiry or ``max_entries``).
    max_bytes: int = 256 * 1024 * 1024

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> SemanticSettings:
        """Build from the table; raises ``ValueError`` naming the bad key."""
        check_keys("cache.semantic", raw, field_names(cls))
        values = dict(raw)
        for name in ("models", "tenants"):
            if name in values:
                values[name] = tuple(values[name])
        settings = cls(**values)
        if settings.threshold is not None and not 0.0 < settings.threshold <= 1.0:
            raise ValueError("cache.semantic.threshold must be in (0, 1]")
        if not 0.0 < settings.target_error_rate <= 1.0:
            raise ValueError("cache.semantic.target_error_rate must be in (0, 1]")
        rung_for(settings.target_error_rate)  # a target no rule can show is refused here
        for name in ("max_entries", "max_bytes"):
            value = getattr(settings, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"cache.semantic.{name} must be a positive integer")
        return settings


class L2Kind(enum.StrEnum):
    """Which shared cache to use."""

    AUTO = "auto"  # Redis when REDIS_URL is set, else the NATS KV bucket
    REDIS = "redis"
    NATS = "nats"
    OFF = "off"


class NondeterministicPolicy(enum.StrEnum):
    """What to do with requests whose answer is sampled (temperature > 0 or unset)."""

    CACHE = "cache"  # a cached answer is one valid sample; callers opt out with no-cache
    BYPASS = "bypass"  # never cache them unless they set temperature 0 or a seed


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheSettings:
    """The ``[cache]`` table."""

    enabled: bool = True
    l1_max_entries: int = DEFAULT_L1_MAX_ENTRIES
    l1_max_bytes: int = DEFAULT_L1_MAX_BYTES
    l1_ttl_s: float = DEFAULT_L1_TTL_S
    embeddings_l1_max_entries: int = DEFAULT_EMBEDDINGS_L1_MAX_ENTRIES
    embeddings_l1_max_bytes: int = DEFAULT_EMBEDDINGS_L1_MAX_BYTES
    l2: L2Kind = L2Kind.AUTO
    l2_ttl_s: float = DEFAULT_L2_TTL_S
    l2_timeout_s: float = DEFAULT_L2_TIMEOUT_S
    l2_nats_max_bytes: int = DEFAULT_L2_NATS_MAX_BYTES
    nondeterministic: NondeterministicPolicy = NondeterministicPolicy.CACHE
    shared_across_tenants: bool = False
    semantic: SemanticSettings = field(default_factory=SemanticSettings)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> CacheSettings:
        """Build from the ``[cache]`` table; raises ``ValueError`` naming the bad key."""
        check_keys("cache", raw, field_names(cls))
        values = dict(raw)
        if "l2" in values:
            values["l2"] = L2Kind(values["l2"])
        if "semantic" in values:
            values["semantic"] = SemanticSettings.from_mapping(values["semantic"])
        if "nondeterministic" in values:
            values["nondeterministic"] = NondeterministicPolicy(values["nondeterministic"])
        settings = cls(**values)
        if (
            min(
                settings.l1_max_entries,
                settings.l1_max_bytes,
                settings.l2_nats_max_bytes,
                settings.embeddings_l1_max_entries,
                settings.embeddings_l1_max_bytes,
            )
            < 1
            or min(settings.l1_ttl_s, settings.l2_ttl_s, settings.l2_timeout_s) <= 0
        ):
            raise ValueError("cache: sizes and durations must be positive")
        return settings
