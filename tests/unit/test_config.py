"""Configuration loading: validation messages, defaults, mock fallback."""

from __future__ import annotations

import pytest

from broker.config import Config, ConfigError
from workers import ProviderKind


def test_default_config_loads_and_documents_mock() -> None:
    """The built-in default config is valid and serves a mock model."""
    config = Config.load()
    assert config.resolve("mock") is not None
    assert config.resolve("gpt-4o-mini-2024-07-18") is config.resolve("gpt-4o-mini")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[models.a]\ndeployments = [{ provider = 'nope' }]", "unknown provider 'nope'"),
        ("[providers.p]\nkind = 'martian'", "unknown kind 'martian'"),
        ("[providers.p]\nkind = 'mock'\n[models.a]\ndeployments = []", "at least one deployment"),
        (
            "[providers.p]\nkind = 'mock'\n[models.a]\naliases = ['b']\n"
            "deployments = [{ provider = 'p' }]\n[models.b]\ndeployments = [{ provider = 'p' }]",
            "'b' is used twice",
        ),
        ("[broker]\ndefault_timeout_s = -1", "default_timeout_s must be > 0"),
        ("[broker]\nmax_inflight = 3", "unknown keys ['max_inflight']"),
        ("[broker]\ntenant_metrics = 'yes'", "tenant_metrics must be true or false"),
        ("[tenants.t]\npii_restore = true", 'tenants.t.pii_restore needs pii = "redact"'),
        ("[auth]\nnats_tenant_subjects = 1", "auth.nats_tenant_subjects must be true or false"),
        ("[providers.p]\nkind = 'openai_compatible'", "needs base_url"),
        ("[cache]\nl2 = 'memcached'", "memcached"),
        ("[models.a\n", "<config>"),
        (
            "[providers.p]\nkind = 'mock'\n[models.a]\nstrategy = 'random'\n"
            "deployments = [{ provider = 'p' }]",
            "unknown strategy 'random'",
        ),
        (
            "[providers.p]\nkind = 'mock'\n[models.a]\nfallbacks = ['zzz']\n"
            "deployments = [{ provider = 'p' }]",
            "fallback 'zzz' is not another configured model",
        ),
        (
            "[providers.p]\nkind = 'mock'\n[models.a]\n"
            "deployments = [{ provider = 'p', weight = 0 }]",
            "weight must be > 0",
        ),
        (
            "[providers.p]\nkind = 'mock'\n[models.a]\n"
            "deployments = [{ provider = 'p', rpm = -5 }]",
            "rpm, tpm, concurrency and timeout_s must be > 0",
        ),
        (
            "[providers.p]\nkind = 'mock'\n[models.a]\n"
            "deployments = [{ provider = 'p', weight = 'heavy' }]",
            "deployments[0]",
        ),
        ("[breaker]\nfailure_rate = 1.5", "failure_rate must be in (0, 1]"),
        ("[resilience]\nmax_attempts = 0", "max_attempts >= 1"),
        ("[nats]\nreplicas = 0", "nats.replicas must be from 1 to 5"),
        ("[nats]\nreplicas = 7", "nats.replicas must be from 1 to 5"),
        ("[nats]\nreplicas = '3'", "nats.replicas must be an integer"),
        ("[nats]\nreplica = 3", "unknown keys ['replica']"),
    ],
)
def test_invalid_config_names_the_fault(toml: str, message: str) -> None:
    """Every invalid configuration is refused with a message naming the key."""
    with pytest.raises(ConfigError, match=None) as caught:
        Config.from_toml(toml)
    assert message in str(caught.value)


def test_mock_fallback_replaces_only_keyless_providers() -> None:
    """Models whose providers lack keys move to the mock; models with keys stay."""
    config = Config.from_toml("""
        [providers.openai]
        kind = "openai"
        api_key_env = "OPENAI_API_KEY"
        [providers.groq]
        kind = "openai_compatible"
        base_url = "http://groq.test/v1"
        api_key_env = "GROQ_API_KEY"
        [models.a]
        deployments = [{ provider = "openai" }]
        [models.b]
        deployments = [{ provider = "groq" }]
    """)
    adjusted, mocked = config.with_mock_fallback({"GROQ_API_KEY": "k"})
    assert mocked == ["a"]
    model_a = adjusted.resolve("a")
    model_b = adjusted.resolve("b")
    assert model_a is not None
    assert model_b is not None
    assert model_a.deployments[0].provider == "mock"
    assert adjusted.providers["mock"].kind is ProviderKind.MOCK
    assert model_b.deployments[0].provider == "groq"
    assert adjusted.serving_providers() == ["groq", "mock"]
