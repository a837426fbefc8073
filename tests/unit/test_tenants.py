"""Tenant configuration and key lookup."""

from __future__ import annotations

import pytest

from broker.config import Config, ConfigError
from broker.tenancy.tenants import ANONYMOUS, KeyRing, TenantConfig, hash_key, new_key


def test_keys_are_stored_as_hashes_only() -> None:
    """A plain key in the configuration is refused with a pointer to `keys hash`."""
    with pytest.raises(ConfigError, match="store hashes"):
        Config.from_toml('[tenants.a]\nkeys = ["sk-le-plaintext"]')


def test_lookup_open_and_closed() -> None:
    """Without keys everyone is `default`; with keys only known keys resolve."""
    assert KeyRing({}).tenant_for(None) is ANONYMOUS
    key = new_key()
    ring = KeyRing({"a": TenantConfig(name="a", keys=(hash_key(key),))})
    assert ring.tenant_for(None) is None
    assert ring.tenant_for("Bearer nope") is None
    tenant = ring.tenant_for(f"Bearer {key}")
    assert tenant is not None
    assert tenant.name == "a"
    ring.load_snapshot({hash_key("sk-le-runtime"): "b"})
    runtime = ring.tenant_for("Bearer sk-le-runtime")
    assert runtime is not None
    assert runtime.name == "b"
    ring.load_snapshot({})  # revoked
    assert ring.tenant_for("Bearer sk-le-runtime") is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("pii = 'maybe'", "pii must be off, redact or block"),
        ("rpm = 0", "rpm and tpm must be positive"),
        ("colour = 'red'", "unknown keys"),
    ],
)
def test_bad_tenant_tables(table: str, message: str) -> None:
    """Invalid tenant settings are refused naming the key."""
    with pytest.raises(ConfigError, match=message):
        Config.from_toml(f"[tenants.a]\n{table}")
