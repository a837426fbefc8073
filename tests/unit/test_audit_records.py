"""What a broker writes to the audit trail: which commands, with which parameters (never a
key), for whom, how often a refusal, and when an admin action must be refused instead."""

from __future__ import annotations

import pytest

from broker.audit.actions import config_summary, describe, failure_detail
from broker.audit.settings import AuditSettings
from broker.audit.trail import REFUSAL_QUIET_S, AdminAudit
from broker.config import Config, ConfigError
from broker.tenancy.tenants import KeyRing, TenantConfig, hash_key
from edge_runtime.audit import Entry
from schemas import audit, error_body, headers, subjects
from schemas.audit import outcome_of

ADMIN_KEY = "sk-le-admin-0000000000000000000000000000000000"
TEAM_KEY = "sk-le-team-00000000000000000000000000000000000"
CONSOLE_KEY = "sk-le-console-000000000000000000000000000000000"


class Sink:
    """Keeps what it is given, and says it is full when told to."""

    def __init__(self) -> None:
        self.entries: list[tuple[Entry, bool]] = []
        self.full = False

    def submit(self, entry: Entry, *, droppable: bool = False) -> bool:
        self.entries.append((entry, droppable))
        return True


def keyring() -> KeyRing:
    return KeyRing(
        {
            "ops": TenantConfig(name="ops", keys=(hash_key(ADMIN_KEY),), admin=True),
            "team": TenantConfig(name="team", keys=(hash_key(TEAM_KEY),)),
        },
        console_keys=frozenset({hash_key(CONSOLE_KEY)}),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def bearer(key: str) -> dict[str, str]:
    return {headers.AUTHORIZATION: f"Bearer {key}"}


def test_a_created_key_is_recorded_by_its_hash_never_itself() -> None:
    """key.create keeps the tenant and the new key's hash; the key in the answer is left out."""
    answer = {"tenant": "team", "key": "sk-le-secret", "hash": hash_key("sk-le-secret")}
    action, params = describe(subjects.ADMIN_KEYS, {"action": "create", "tenant": "team"}, answer)
    assert action == audit.KEY_CREATE
    assert params == {"tenant": "team", "hash": hash_key("sk-le-secret")}
    assert "sk-le-secret" not in repr(params).replace(hash_key("sk-le-secret"), "")


@pytest.mark.parametrize(
    ("subject", "command", "expected"),
    [
        (
            subjects.ADMIN_KEYS,
            {"action": "revoke", "hash": "sha256:ab"},
            (audit.KEY_REVOKE, {"hash": "sha256:ab"}),
        ),
        (
            subjects.ADMIN_KEYS,
            {"action": "update", "hash": "sha256:ab", "models": ["gpt-4o*"], "rpm": 10},
            (audit.KEY_UPDATE, {"hash": "sha256:ab", "models": "['gpt-4o*']", "rpm": "10"}),
        ),
        (subjects.ADMIN_KEYS, {"action": "list"}, None),
        (subjects.BREAKER_ADMIN, {"action": "status"}, None),
        (subjects.BREAKER_ADMIN, {"action": "explode", "deployment": "d"}, None),
        (
            subjects.BREAKER_ADMIN,
            {"action": "open", "deployment": "d"},
            (audit.BREAKER_OPEN, {"deployment": "d"}),
        ),
        (
            subjects.BREAKER_ADMIN,
            {"action": "reset", "deployment": "d"},
            (audit.BREAKER_RESET, {"deployment": "d"}),
        ),
        (subjects.CACHE_PURGE, {"all": True}, (audit.CACHE_PURGE, {"all": True})),
        (
            subjects.CACHE_PURGE,
            {"namespace": "ns", "tenant": "team"},
            (audit.CACHE_PURGE, {"namespace": "ns", "tenant": "team"}),
        ),
        (subjects.ADMIN_KEYS_RELOAD, {}, (audit.KEYS_RELOAD, {})),
        (subjects.ADMIN_BATCH_CANCEL, {"id": "batch_1"}, (audit.BATCH_CANCEL, {"id": "batch_1"})),
        (subjects.ADMIN_STATUS, {}, None),
        (subjects.ADMIN_SPEND, {}, None),
    ],
)
def test_which_commands_are_recorded_and_with_what(
    subject: str, command: dict[str, object], expected: object
) -> None:
    """State changes are recorded; reads and commands naming no known action are not."""
    assert describe(subject, command) == expected


def test_parameters_are_bounded() -> None:
    """A namespace of 10,000 characters is kept as its first 200."""
    _, params = describe(subjects.CACHE_PURGE, {"namespace": "n" * 10_000}) or ("", {})
    assert params["namespace"] == "n" * 200


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (ADMIN_KEY, ("ops", "admin")),
        (TEAM_KEY, ("team", "tenant")),
        (CONSOLE_KEY, ("", "console")),
        ("sk-le-nobody-knows-this-one", ("", "unknown")),
    ],
)
def test_the_actor_is_the_keys_hash_and_what_it_is(key: str, expected: tuple[str, str]) -> None:
    """Each kind of key gives its hash, its tenant if any, and its role."""
    actor = AdminAudit(Sink(), keyring(), Clock()).actor(bearer(key))
    assert (actor.tenant, actor.role) == expected
    assert actor.key == hash_key(key)


def test_without_a_key_the_actor_is_anonymous() -> None:
    """No Authorization: no hash, role anonymous."""
    actor = AdminAudit(Sink(), keyring(), Clock()).actor({})
    assert (actor.key, actor.tenant, actor.role) == ("", "", "anonymous")


def test_the_origin_is_what_the_sender_said_bounded_and_printable() -> None:
    """Via, peer and client come from the headers; control characters are dropped; a command
    without them came from some NATS client."""
    sink = Sink()
    trail = AdminAudit(sink, keyring(), Clock())
    trail.record(
        audit.BREAKER_OPEN,
        {
            headers.ADMIN_VIA: "console",
            headers.ADMIN_PEER: "10.0.0.7\n\x1b[31m" + "x" * 500,
            headers.ADMIN_CLIENT: "bridge cid 4 on n1",
        },
        status=200,
    )
    trail.record(audit.BREAKER_OPEN, {}, status=200)
    first, second = (entry.origin for entry, _ in sink.entries)
    assert first.via == "console"
    assert first.peer.startswith("10.0.0.7[31m")
    assert len(first.peer) <= 200
    assert first.client == "bridge cid 4 on n1"
    assert (second.via, second.peer) == ("nats", "")


def test_a_refusal_repeated_within_a_minute_is_one_record_then_counted() -> None:
    """Three refusals of one key from one address: one record; the next after a minute says
    how many came in between. Refusals are droppable, admin actions are not."""
    sink, clock = Sink(), Clock()
    trail = AdminAudit(sink, keyring(), clock)
    hdrs = {**bearer("sk-le-wrong"), headers.ADMIN_PEER: "10.0.0.9"}
    for _ in range(3):
        trail.refused(hdrs, status=403, params={"reason": "forbidden"})
        clock.now += 1
    assert len(sink.entries) == 1
    clock.now += REFUSAL_QUIET_S
    trail.refused(hdrs, status=403, params={"reason": "forbidden"})
    trail.record(audit.KEY_REVOKE, hdrs, status=404, params={"hash": "sha256:x"}, detail="gone")
    (first, dropable1), (second, dropable2), (revoke, dropable3) = sink.entries
    assert (first.action, first.outcome, first.status) == (audit.CONSOLE_REFUSED, "refused", 403)
    assert "repeats" not in first.params
    assert second.params == {"reason": "forbidden", "repeats": 2}
    assert (dropable1, dropable2, dropable3) == (True, True, False)
    assert (revoke.outcome, revoke.detail) == ("not_found", "gone")


def test_another_peer_or_reason_is_its_own_refusal() -> None:
    """A second address, or another reason, is recorded at once."""
    sink = Sink()
    trail = AdminAudit(sink, keyring(), Clock())
    trail.refused({headers.ADMIN_PEER: "a"}, status=401, params={"reason": "unauthorized"})
    trail.refused({headers.ADMIN_PEER: "b"}, status=401, params={"reason": "unauthorized"})
    trail.refused({headers.ADMIN_PEER: "a"}, status=415, params={"reason": "media"})
    assert len(sink.entries) == 3


def test_admin_actions_are_refused_while_the_trail_is_full() -> None:
    """admits() is false exactly while the writer holds its bound of records."""
    sink = Sink()
    trail = AdminAudit(sink, keyring(), Clock())
    assert trail.admits()
    sink.full = True
    assert not trail.admits()


def test_a_start_records_budgets_but_no_key_hashes() -> None:
    """config.loaded keeps each tenant's budget and admin flag; key hashes stay out."""
    config = Config.from_toml(
        f"""
        [providers.mock]
        kind = "mock"
        [models.mock]
        deployments = [{{ provider = "mock" }}]
        [tenants.team]
        keys = ["{hash_key(TEAM_KEY)}"]
        budget_usd = 25
        budget_period = "day"
        """
    )
    sink = Sink()
    AdminAudit(sink, keyring(), Clock()).started(config_summary(config))
    [(entry, _)] = sink.entries
    assert entry.action == audit.CONFIG_LOADED
    assert entry.params["tenants"]["team"]["budget_usd"] == 25
    assert entry.params["tenants"]["team"]["budget_period"] == "day"
    assert hash_key(TEAM_KEY) not in repr(entry.params)


def test_a_failures_detail_is_its_error_message() -> None:
    """The envelope's message, encoded or not; nothing for a body without one."""
    assert failure_detail(error_body(400, "invalid_request", "unknown deployment")) == (
        "unknown deployment"
    )
    assert failure_detail({"error": {"message": "m"}}) == "m"
    assert failure_detail(b"not json") == ""


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "ok"),
        (400, "invalid"),
        (401, "refused"),
        (404, "not_found"),
        (415, "refused"),
        (503, "unavailable"),
        (500, "failed"),
    ],
)
def test_outcomes_of_statuses(status: int, outcome: str) -> None:
    assert outcome_of(status) == outcome


def test_audit_settings_from_the_config_file() -> None:
    """[audit] sets retention and the bound; the defaults keep a year in 256 MiB."""
    assert AuditSettings().max_age_s == 365 * 86400
    base = '[providers.mock]\nkind = "mock"\n'
    config = Config.from_toml(base + "[audit]\nmax_age_days = 2\nmax_bytes = 1048576\n")
    assert (config.audit.max_age_s, config.audit.max_bytes) == (2 * 86400, 1048576)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("max_age_days = -1", "audit.max_age_days must be a number >= 0"),
        ("max_bytes = 'big'", "audit.max_bytes must be an integer >= 0"),
        ("max_pending = 0", "audit.max_pending must be an integer >= 1"),
        ("enabled = 'yes'", "audit.enabled must be true or false"),
        ("keep = 1", "unknown keys ['keep']"),
    ],
)
def test_invalid_audit_settings_are_refused_naming_the_key(table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Config.from_toml(f"[audit]\n{table}\n")
