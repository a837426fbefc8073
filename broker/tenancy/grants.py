"""What one caller may do: the models it may ask for and its own limits under its tenant's.

A :class:`Grant` belongs to one API key (a static one in the configuration, a run-time one in
Redis) or to one JWT subject. It only narrows: a request must fit the key's model list *and*
the tenant's, and is counted against the key's rpm, tpm and budget *and* the tenant's, so a
key can never do more than its tenant. Who a request comes from, with its grant, is a
:class:`~broker.tenancy.tenants.Caller`.

Model lists are patterns with ``*`` as the only wildcard (``gpt-4o*``, ``anthropic/*``),
matched against every name of the model asked for (its canonical name and its aliases): an
alias is another name for the same deployments, so allowing one allows the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from edge_runtime.tables import check_keys
from schemas import headers
from schemas.names import is_name

__all__ = [
    "EVERY_MODEL",
    "GRANT_FIELDS",
    "Grant",
    "ModelPatterns",
    "grant_id",
    "parse_run_time_value",
    "run_time_value",
]

#: Bounds on a model list: it travels in Redis values, JWT claims and admin commands.
MAX_PATTERNS, MAX_PATTERN_CHARS = 256, 200
#: The fields of a grant, in configuration tables, Redis values and admin commands alike.
GRANT_FIELDS = frozenset({"models", "rpm", "tpm", "budget_usd", "budget_period", "priority"})
PERIODS = frozenset({"day", "month"})
_json = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


class Limits(Protocol):
    """A tenant's limits, as a key's are checked against them."""

    @property
    def name(self) -> str: ...
    @property
    def rpm(self) -> int | None: ...
    @property
    def tpm(self) -> int | None: ...
    @property
    def budget_usd(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class ModelPatterns:
    """An allow-list of model name patterns; empty allows every model.

    Matching is a scan, not a regular expression: the name comes from the caller and has no
    length bound but the body's, and a pattern like ``*a*a*b`` as a regex backtracks
    polynomially on a long name. Names without ``*`` are a set lookup.
    """

    patterns: tuple[str, ...] = ()
    _exact: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    _globs: tuple[tuple[str, ...], ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def parse(cls, where: str, raw: object) -> ModelPatterns:
        """From a list of strings (a space-separated string is taken too: an OAuth scope).

        Raises:
            ValueError: naming ``where`` when ``raw`` is not a list of bounded strings.
        """
        items = raw.split() if isinstance(raw, str) else raw
        if not isinstance(items, list | tuple) or not all(
            isinstance(p, str) and 0 < len(p) <= MAX_PATTERN_CHARS for p in items
        ):
            raise ValueError(
                f"{where} must be a list of model names or patterns (1-{MAX_PATTERN_CHARS} "
                "characters each, * as the wildcard)"
            )
        if len(items) > MAX_PATTERNS:
            raise ValueError(f"{where}: at most {MAX_PATTERNS} patterns")
        return cls.of(items)

    @classmethod
    def of(cls, patterns: Iterable[str]) -> ModelPatterns:
        """The list of ``patterns`` (duplicates dropped)."""
        kept = tuple(dict.fromkeys(patterns))
        if not kept:
            return EVERY_MODEL  # the one empty list: ``is EVERY_MODEL`` is the hot path's test
        exact = frozenset(p for p in kept if "*" not in p)
        globs = tuple(tuple(p.split("*")) for p in kept if "*" in p)
        return cls(kept, exact, globs)

    def allows(self, names: Iterable[str]) -> bool:
        """Whether any of ``names`` matches a pattern (always, for an empty list)."""
        if not self.patterns:
            return True
        return any(
            name in self._exact or any(_glob(parts, name) for parts in self._globs)
            for name in names
        )

    def __bool__(self) -> bool:
        return bool(self.patterns)


def _glob(parts: tuple[str, ...], name: str) -> bool:
    """Whether ``name`` matches a pattern split at its ``*``s (at least two parts): the first
    part a prefix, the last a suffix, the others found in order in between (leftmost is
    always right for ``*``-only patterns), in time linear in the name per part."""
    first, *middle, last = parts
    if len(name) < len(first) + len(last) or not name.startswith(first):
        return False
    if not name.endswith(last):
        return False
    at, end = len(first), len(name) - len(last)
    for part in middle:
        found = name.find(part, at, end)
        if found < 0:
            return False
        at = found + len(part)
    return True


#: The empty list: every model.
EVERY_MODEL = ModelPatterns()


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """One key's own governance, nested under its tenant's.

    Attributes:
        id: names the key's counters (``key-<hash prefix>``, ``jwt-<subject digest>``);
            never the key itself.
        models: the models the key may ask for (empty: the tenant's).
        rpm, tpm: the key's own requests and tokens per minute.
        budget_usd: the key's own spend cap per ``budget_period``.
        budget_period: ``day`` or ``month``; ``None`` takes the tenant's.
        priority: the class of the key's requests that name none (``None``: the tenant's
            ``default_priority``); capped by the tenant's ``max_priority`` like any asked
            priority.
    """

    id: str
    models: ModelPatterns = EVERY_MODEL
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    priority: str | None = None

    @classmethod
    def from_mapping(cls, where: str, grant_id: str, raw: Mapping[str, Any]) -> Grant:
        """Parse and validate the grant fields of ``raw`` (other keys are the caller's to
        check).

        Raises:
            ValueError: naming ``where`` and the field at fault.
        """
        for name in ("rpm", "tpm"):
            value = raw.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{where}.{name} must be a positive integer")
        budget = raw.get("budget_usd")
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int | float) or not budget >= 0
        ):
            raise ValueError(f"{where}.budget_usd must be a number >= 0")
        period = raw.get("budget_period")
        if period is not None and period not in PERIODS:
            raise ValueError(f"{where}.budget_period must be day or month")
        priority = raw.get("priority")
        if priority is not None and headers.priority_rank(priority) is None:
            raise ValueError(
                f"{where}.priority must be one of {', '.join(headers.PRIORITY_CLASSES)}"
            )
        return cls(
            id=grant_id,
            models=ModelPatterns.parse(f"{where}.models", raw.get("models", [])),
            rpm=raw.get("rpm"),
            tpm=raw.get("tpm"),
            budget_usd=float(budget) if budget is not None else None,
            budget_period=period,
            priority=priority,
        )

    def within(self, where: str, tenant: Limits) -> None:
        """Refuse a limit wider than the tenant's (it could never be used: both apply).

        Raises:
            ValueError: naming ``where`` and the field.
        """
        for name, mine, theirs in (
            ("rpm", self.rpm, tenant.rpm),
            ("tpm", self.tpm, tenant.tpm),
            ("budget_usd", self.budget_usd, tenant.budget_usd),
        ):
            if mine is not None and theirs is not None and mine > theirs:
                raise ValueError(
                    f"{where}.{name} ({mine:g}) is over tenant {tenant.name}'s ({theirs:g}): "
                    "a key's limits only narrow its tenant's"
                )

    @property
    def limited(self) -> bool:
        """Whether admitting the key's requests waits on shared counters."""
        return bool(self.rpm or self.tpm or self.budget_usd is not None)

    def describe(self) -> dict[str, Any]:
        """The grant's fields as stored in Redis and shown by the console (unset ones left
        out)."""
        out: dict[str, Any] = {"models": list(self.models.patterns)} if self.models else {}
        for name in ("rpm", "tpm", "budget_usd", "budget_period", "priority"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def check_grant_keys(where: str, raw: Mapping[str, Any], *others: str) -> None:
    """Refuse keys that are neither grant fields nor ``others``."""
    check_keys(where, raw, {*GRANT_FIELDS, *others})


def grant_id(key_hash: str) -> str:
    """The counters' name for a key's own limits: a prefix of its hash, never the key."""
    return "key-" + key_hash.removeprefix("sha256:")[:16]


def is_key_hash(value: object) -> bool:
    """Whether ``value`` is a ``sha256:<64 hex>`` key hash."""
    return isinstance(value, str) and value.startswith("sha256:") and len(value) == 71


def run_time_value(tenant: str, grant: Mapping[str, Any]) -> str:
    """The Redis value of a run-time key: its tenant's name, or a JSON object with the
    tenant and the key's grant fields."""
    return tenant if not grant else _encoder.encode({"tenant": tenant, **grant}).decode()


def parse_run_time_value(key_hash: str, value: str) -> tuple[str, Grant | None]:
    """The tenant and grant of a run-time key's Redis value (see :func:`run_time_value`).

    Raises:
        ValueError: the value names no valid tenant, or its grant is invalid.
    """
    if not value.startswith("{"):  # a bare tenant name, as keys were always stored
        return value, None
    try:
        raw = _json.decode(value)
    except msgspec.DecodeError:
        raise ValueError("the value is not JSON") from None
    tenant = raw.pop("tenant", None)
    if not is_name(tenant):
        raise ValueError("the value names no valid tenant")
    check_grant_keys("run-time key", raw)
    return str(tenant), Grant.from_mapping("run-time key", grant_id(key_hash), raw)
