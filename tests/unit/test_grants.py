"""Per-key grants, model patterns, nested rate-limit scopes, the JWT settings and the
verified-token cache, as pure functions and in-process objects."""

from __future__ import annotations

import pytest

from broker.config import Config, ConfigError
from broker.errors import ModelNotAllowed
from broker.tenancy.grants import Grant, ModelPatterns, parse_run_time_value, run_time_value
from broker.tenancy.jwt import TokenCache, claim
from broker.tenancy.limits import RateLimiter, Scope
from broker.tenancy.tenants import Caller, KeyRing, KeysNeeded, TenantConfig, hash_key
from schemas import headers


@pytest.mark.parametrize(
    ("patterns", "name", "allowed"),
    [
        (["gpt-4o*"], "gpt-4o-mini", True),
        (["gpt-4o*"], "gpt-4", False),
        (["anthropic/*"], "anthropic/claude-sonnet", True),
        (["anthropic/*"], "openai/anthropic/x", False),
        (["gpt-4.1"], "gpt-4x1", False),  # a dot is a dot, not any character
        (["a+b"], "aab", False),
        (["*"], "anything", True),
        (["*mini*"], "gpt-4o-mini-2024", True),
        (["a*b*c"], "abbc", True),
        (["a*b*c"], "acb", False),
        (["ab*ba"], "aba", False),  # prefix and suffix may not overlap
        ([], "anything", True),
    ],
)
def test_model_patterns_match_whole_names_with_star_only(
    patterns: list[str], name: str, allowed: bool
) -> None:
    """``*`` is the only wildcard; every other character matches itself, the whole name."""
    assert ModelPatterns.parse("models", patterns).allows([name]) is allowed


def test_a_hostile_pattern_and_name_match_in_linear_time() -> None:
    """A many-star pattern against a 1 MB model name (the caller chooses the name) is a
    scan, not a backtracking regex: it answers at once."""
    patterns = ModelPatterns.of(["a*a*a*a*a*a*a*a*b"])
    assert patterns.allows(["a" * 1_000_000]) is False


@pytest.mark.parametrize(
    "raw",
    [{"rpm": 0}, {"tpm": True}, {"budget_usd": -1}, {"budget_period": "week"}, {"models": [""]}],
)
def test_a_grant_refuses_bad_values_naming_the_field(raw: dict[str, object]) -> None:
    """Each invalid grant field is a ValueError naming it."""
    field = next(iter(raw))
    with pytest.raises(ValueError, match=rf"key\.{field}"):
        Grant.from_mapping("key", "key-x", raw)


def test_run_time_values_round_trip_and_old_ones_still_read() -> None:
    """A run-time key's Redis value carries its grant as JSON; a bare tenant name (as keys
    were always stored) is a key without one."""
    key_hash = hash_key("sk-le-x")
    value = run_time_value("acme", {"models": ["m*"], "rpm": 4})
    tenant, grant = parse_run_time_value(key_hash, value)
    assert tenant == "acme"
    assert grant is not None
    assert grant.describe() == {"models": ["m*"], "rpm": 4}
    assert parse_run_time_value(key_hash, "acme") == ("acme", None)
    with pytest.raises(ValueError, match=r"run-time key\.rpm"):
        parse_run_time_value(key_hash, '{"tenant": "acme", "rpm": -1}')


def test_a_key_ring_gives_each_key_its_grant_and_keeps_jwt_out_of_the_key_path() -> None:
    """A static key's table and a run-time key's JSON become its grant; a key that does not
    look like a JWT never reaches the token verifier, even when one is configured."""
    config = Config.from_toml(f"""
        [tenants.acme]
        keys = [{{ hash = "{hash_key("sk-le-a")}", models = ["m1"] }}, "{hash_key("sk-le-b")}"]
    """)

    class Refuses:
        def identify(self, token: str) -> Caller:
            raise KeysNeeded("k")

        async def identify_fetching(self, token: str) -> Caller:
            raise AssertionError

    ring = KeyRing(config.tenants, jwt=Refuses())
    ring.load_snapshot({hash_key("sk-le-c"): run_time_value("acme", {"rpm": 2})})
    granted = ring.identify("Bearer sk-le-a")
    assert granted.grant is not None
    assert granted.grant.models.patterns == ("m1",)
    assert ring.identify("Bearer sk-le-b").grant is None
    runtime = ring.identify("Bearer sk-le-c").grant
    assert runtime is not None
    assert runtime.rpm == 2
    with pytest.raises(KeysNeeded):
        ring.identify("Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig")
    with pytest.raises(ModelNotAllowed, match="`m2`"):
        granted.check_model("m2", ["m2"])


def test_a_tenants_model_list_binds_every_key() -> None:
    """A tenant's own list applies to keys without one, and names the tenant when it refuses."""
    tenant = TenantConfig(name="t", models=ModelPatterns.of(["a*"]))
    Caller(tenant).check_model("abc", ["abc"])
    with pytest.raises(ModelNotAllowed, match="This tenant may not use the model `b`"):
        Caller(tenant).check_model("b", ["b"])


async def test_nested_scopes_count_a_request_in_both_or_neither() -> None:
    """In process (Redis down), a request refused by the key's scope is not counted in the
    tenant's, and one refused by the tenant's is not counted in the key's."""
    limiter = RateLimiter(None, clock=lambda: 120.0)
    tenant, key = Scope("t", 3, None), Scope("t/key-1", 2, None)
    verdicts = [await limiter.take([tenant, key], 1) for _ in range(3)]
    assert [v.allowed for v in verdicts] == [True, True, False]
    assert verdicts[2].scope == 1  # the key's limit refused it
    assert (await limiter.take([tenant], 1)).allowed  # the tenant's third request fits
    refused = await limiter.take([tenant], 1)
    assert (refused.allowed, refused.scope) == (False, 0)


def test_jwt_settings_refuse_unsafe_algorithms_and_ambiguous_sources() -> None:
    """``none`` and HMAC algorithms are refused, and the JWKS comes from one place."""
    base = '[auth.jwt]\nissuer = "i"\naudience = "a"\n'
    for extra, words in (
        ('jwks_file = "k"\nalgorithms = ["none"]', "never none"),
        ('jwks_file = "k"\nalgorithms = ["HS256"]', "never none or HS"),
        ('jwks_file = "k"\njwks_url = "https://x/k"', "one of them"),
        ("", "one of them"),
        ('jwks_url = "file:///etc/keys"', "https://"),
        ('jwks_file = "k"\nleeway_s = 3600', "leeway_s"),
    ):
        with pytest.raises(ConfigError, match=words):
            Config.from_toml(base + extra)


def test_the_token_cache_is_bounded_and_forgets_expired_tokens() -> None:
    """The oldest entry goes when the cache is full; an entry is gone once it expires."""
    cache: TokenCache[int] = TokenCache(2)
    cache.put("a", 1, expires=10)
    cache.put("b", 2, expires=10)
    cache.put("c", 3, expires=5)
    assert (cache.get("a", 0), cache.get("b", 0), cache.get("c", 0)) == (None, 2, 3)
    assert cache.get("c", 5) is None
    assert len(cache) == 1


def test_claims_are_found_by_name_then_by_path() -> None:
    """A namespaced claim is read whole; a dotted path walks into objects."""
    claims = {"https://x.test/tenant": "acme", "realm_access": {"roles": ["admin"]}}
    assert claim(claims, "https://x.test/tenant") == "acme"
    assert claim(claims, "realm_access.roles") == ["admin"]
    assert claim(claims, "realm_access.missing") is None


def test_forwarded_header_bounds_fit_the_room_kept_for_them() -> None:
    """Every forwarded header at its bound (a JWT's 8 KiB among them) fits HEADER_ROOM."""
    assert headers.MAX_VALUE_BYTES[headers.AUTHORIZATION] >= 8192
    worst = sum(len(name) + 4 + limit for name, limit in headers.MAX_VALUE_BYTES.items())
    assert worst + 1024 < headers.HEADER_ROOM  # 1 KiB for the headers services add
