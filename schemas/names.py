"""Names callers choose that become parts of cache keys and NATS subjects.

A cache namespace (the ``X-Cache-Namespace`` header) and a tenant name end up as tokens of
``<tenant>:<namespace>:<digest hex>`` keys, which L2 turns into NATS subjects (``.``
separated, ``*`` and ``>`` wildcards) or Redis glob patterns (``*``, ``?``, ``[``). One rule
keeps every such character out, so the request path and the purge command agree on what a
name is and every cache tier selects the same entries for a purge.
"""

from __future__ import annotations

import re

__all__ = ["NAME_RULE", "is_cache_key", "is_name"]

#: What a valid name is, for error messages.
NAME_RULE = "1-64 of A-Z a-z 0-9 _ -"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


def is_name(value: object) -> bool:
    """Whether ``value`` is a valid namespace or tenant name (see :data:`NAME_RULE`)."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def is_cache_key(value: object) -> bool:
    """Whether ``value`` is a whole cache key, ``<tenant>:<namespace>:<digest hex>``."""
    if not isinstance(value, str):
        return False
    parts = value.split(":")
    return (
        len(parts) == 3
        and is_name(parts[0])
        and is_name(parts[1])
        and _DIGEST.fullmatch(parts[2]) is not None
    )
