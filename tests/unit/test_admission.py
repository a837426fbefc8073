"""Admission's parts on a hand-moved clock: pools, the fair queue, gates, the mesh's split,
what providers' headers say, and the class a request waits in."""

from __future__ import annotations

import asyncio

import pytest

from broker.admission.admit import Admission
from broker.admission.classes import Priority, request_priority
from broker.admission.gate import Gate, Grant
from broker.admission.learn import Learned, parse_reset, read_limits
from broker.admission.limits import Limits, request_window
from broker.admission.pool import Pool
from broker.admission.queue import FairQueue, Ticket
from broker.admission.settings import AdmissionSettings
from broker.admission.split import water_fill
from broker.cache.directives import CacheDirectives
from broker.errors import InvalidRequest, RateLimited
from broker.request import Prepared
from broker.tenancy.budget import SpendLedger
from broker.tenancy.grants import Grant as KeyGrant
from broker.tenancy.limits import RateLimiter
from broker.tenancy.meter import Meter
from broker.tenancy.tenants import TenantConfig
from broker.upstream.deployments import Deployment, ModelConfig
from schemas import decode_chat_request


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ticket(tenant: str, klass: int = 1, weight: float = 1.0, since: float = 0.0) -> Ticket:
    made = Ticket(tenant, weight, klass, (1, 1, 10), since=since, label=tenant)
    made.future = asyncio.get_running_loop().create_future()
    return made


def drain(queue: FairQueue, now: float, count: int) -> list[str]:
    """Take ``count`` tickets in the queue's order; their tenants."""
    order = []
    for _ in range(count):
        best = queue.best(now)
        assert best is not None
        queue.pop(best)
        assert best.future is not None
        best.future.set_result(None)
        best.close()
        order.append(best.tenant)
    return order


def test_a_windowed_pool_frees_its_permits_as_they_age() -> None:
    """A request permit stays taken for its hold, then frees by itself."""
    pool = Pool(2, hold_s=1.0)
    pool.take(1, 1, now=0.0)
    pool.take(1, 1, now=0.5)
    assert pool.free(0.9) == 0
    assert pool.free(1.0) == 1
    assert pool.free(1.5) == 2


def test_a_calls_pool_frees_a_permit_when_its_call_ends() -> None:
    """A calls-in-flight permit frees when given back, once."""
    pool = Pool(1)
    held = pool.take(1, 0, now=0.0)
    assert pool.free(100.0) == 0
    pool.give_back(held)
    pool.give_back(held)
    assert pool.free(100.0) == 1


def test_a_token_permit_is_settled_to_what_the_call_used() -> None:
    """An estimate of 500 tokens that used 120 leaves 380 free within the window."""
    pool = Pool(1000, hold_s=60.0)
    held = pool.take(500, 2, now=0.0)
    pool.settle(held, 120, now=1.0)
    assert pool.free(1.0) == 880
    assert pool.by_class[2] == 120


def test_the_rpm_window_keeps_any_minute_under_the_limit() -> None:
    """600 rpm: 10 permits held 1.1 s (a tenth to spare); 30 rpm: 4 permits held 8.8 s."""
    assert request_window(600) == (10, pytest.approx(1.1))
    assert request_window(30) == (4, pytest.approx(8.8))
    assert request_window(2) == (2, pytest.approx(66.0))
    assert Limits(calls=8, rpm=600, tpm=1000).sizes() == (8, 10, 1000)


async def test_weights_share_a_class_three_to_one() -> None:
    """Tenants of weights 3 and 1 with requests waiting are served 3:1."""
    queue = FairQueue(aging_s=30.0)
    for i in range(40):
        queue.push(ticket("heavy", weight=3.0, since=i))
        queue.push(ticket("light", weight=1.0, since=i))
    order = drain(queue, 100.0, 40)
    assert order.count("heavy") == 30
    assert order.count("light") == 10


async def test_a_tenant_alone_takes_everything_and_earns_no_credit_while_idle() -> None:
    """A lone tenant is served at once; one that had nothing queued rejoins at the current
    pass, so it does not then take a run of turns."""
    queue = FairQueue(aging_s=30.0)
    for i in range(10):
        queue.push(ticket("busy", since=i))
    assert drain(queue, 20.0, 10) == ["busy"] * 10
    for i in range(4):
        queue.push(ticket("busy", since=20 + i))
        queue.push(ticket("idle", since=20 + i))
    assert drain(queue, 30.0, 4).count("idle") == 2


async def test_higher_classes_go_first_and_aging_lets_a_lower_one_through() -> None:
    """Interactive before background; a background request that waited two aging periods
    longer than the interactive ones goes before them."""
    queue = FairQueue(aging_s=10.0)
    queue.push(ticket("bg", klass=Priority.BACKGROUND, since=0.0))
    queue.push(ticket("int", klass=Priority.INTERACTIVE, since=1.0))
    assert drain(queue, 5.0, 1) == ["int"]
    queue.push(ticket("int", klass=Priority.INTERACTIVE, since=20.5))
    assert drain(queue, 21.0, 2) == ["bg", "int"]


async def test_a_full_gate_grants_waiting_tickets_in_order_as_calls_end() -> None:
    """With one call permit taken, a waiting ticket gets it when the call ends."""
    clock = Clock()
    gate = Gate("d", (Pool(1), None, None), aging_s=30, reserve_window_s=10, clock=clock)
    first = gate.try_take(ticket("a"))
    assert first is not None
    waiting = ticket("b")
    assert gate.try_take(waiting) is None
    gate.enqueue(waiting)
    assert waiting.future is not None
    assert not waiting.future.done()
    first.release()
    grant = waiting.future.result()
    assert isinstance(grant, Grant)
    assert grant.gate is gate


async def test_a_busy_interactive_class_keeps_headroom_from_background() -> None:
    """Once interactive traffic used a pool lately, background leaves it its peak and a burst
    allowance (one and the square root of the peak) free: an interactive request finds a
    permit at once while background is held back; without interactive traffic, background
    may use every permit."""
    clock = Clock()
    gate = Gate("d", (Pool(10), None, None), aging_s=30, reserve_window_s=10, clock=clock)
    quiet = [gate.try_take(ticket("bg", klass=Priority.BACKGROUND)) for _ in range(10)]
    assert all(quiet)
    for permit in quiet:
        assert permit is not None
        permit.release()
    peak = [gate.try_take(ticket("b", klass=Priority.INTERACTIVE)) for _ in range(4)]
    for permit in peak:
        assert permit is not None
        permit.release()
    background = [gate.try_take(ticket("a", klass=Priority.BACKGROUND)) for _ in range(10)]
    assert sum(p is not None for p in background) == 3  # 10 less a peak of 4 and 1 + 2 more
    burst = [gate.try_take(ticket("b", klass=Priority.INTERACTIVE)) for _ in range(8)]
    assert sum(p is not None for p in burst) == 7
    for permit in [*background, *burst]:
        if permit is not None:
            permit.release()
    clock.now = 21.0  # two windows without interactive traffic: no headroom kept
    assert all(gate.try_take(ticket("a", klass=Priority.BACKGROUND)) for _ in range(10))


async def test_a_shrinking_share_keeps_interactive_headroom_from_what_background_borrowed() -> None:
    """Background borrowed permits from a larger share; the mesh then lowers the share (a
    peer needs its part back): the share stays up while those permits are in use, so an
    interactive request still finds one at once, background fits only the new share, and
    the share reaches it as background's permits free."""
    clock = Clock()
    gate = Gate("d", (Pool(10), None, None), aging_s=30, reserve_window_s=10, clock=clock)
    peak = [gate.try_take(ticket("b", klass=Priority.INTERACTIVE)) for _ in range(3)]
    for permit in peak:
        assert permit is not None
        permit.release()  # interactive's recent peak: 3 calls
    interactive = [gate.try_take(ticket("b", klass=Priority.INTERACTIVE)) for _ in range(2)]
    background = [gate.try_take(ticket("a", klass=Priority.BACKGROUND)) for _ in range(8)]
    borrowed = [p for p in background if p is not None]
    assert len(borrowed) == 5  # 10 less interactive's peak of 3 and its headroom of 2

    kept = gate.keep(0, 6)  # the allocator lowers the share to 6
    assert kept == 10
    gate.resize(0, kept, 6)
    assert gate.try_take(ticket("b", klass=Priority.INTERACTIVE)) is not None
    assert gate.try_take(ticket("a", klass=Priority.BACKGROUND)) is None  # fits 6 alone

    for permit in borrowed[:4]:
        permit.release()
    assert gate.keep(0, 6) == 6  # 3 interactive + 1 background + 2 headroom
    gate.resize(0, 6, 6)
    assert gate.try_take(ticket("b", klass=Priority.INTERACTIVE)) is not None
    for permit in [*interactive, *borrowed[4:]]:
        assert permit is not None
        permit.release()
    assert gate.keep(0, 2) == 2  # no background permit left: nothing to keep


async def test_a_paused_gate_grants_nothing_until_the_pause_ends() -> None:
    """A deployment paused (the provider's 429) takes no call until the pause ends."""
    loop = asyncio.get_running_loop()
    gate = Gate("d", (None, None, None), aging_s=30, reserve_window_s=10, clock=loop.time)
    gate.pause(loop.time() + 0.05)
    waiting = ticket("a")
    assert gate.try_take(waiting) is None
    gate.enqueue(waiting)
    assert waiting.future is not None
    grant = await asyncio.wait_for(waiting.future, 5)
    assert grant.gate is gate


def test_water_fill_gives_small_wants_in_full_and_splits_the_rest() -> None:
    """Max-min fair: a broker that wants 2 of 10 gets them; two busy ones split the rest; an
    odd permit changes hands from one turn to another."""
    assert water_fill(10, {"a": 2, "b": 100, "c": 100}) == {"a": 2, "b": 4, "c": 4}
    assert sorted(water_fill(3, {"a": 5, "b": 5}).values()) == [1, 2]
    assert water_fill(8, {"a": 0, "b": 3}) == {"a": 0, "b": 3}
    assert sum(water_fill(7, {"x": 9, "y": 1, "z": 9}).values()) == 7
    holders = {
        next(b for b, n in water_fill(1, {"a": 1, "b": 1}, t).items() if n) for t in range(8)
    }
    assert holders == {"a", "b"}


def test_reset_values_in_openai_form() -> None:
    """``6m0s``, ``1.5s``, ``20ms`` and bare seconds are read; nonsense is not."""
    assert parse_reset("6m0s") == 360.0
    assert parse_reset("1.5s") == 1.5
    assert parse_reset("20ms") == pytest.approx(0.02)
    assert parse_reset("1h2m3s") == 3723.0
    assert parse_reset("7") == 7.0
    assert parse_reset("soon") is None


def test_provider_headers_name_limits_and_pauses() -> None:
    """Limits are read; nothing left pauses until the reset; a 429 pauses for its
    Retry-After, and not at all without one."""
    assert read_limits({"x-ratelimit-limit-requests": "500"}, 200) == Learned(rpm=500)
    nothing_left = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
    }
    assert read_limits(nothing_left, 200) == Learned(pause_s=2.0)
    assert read_limits({"Retry-After": "3"}, 429) == Learned(pause_s=3.0)
    assert read_limits({}, 429) is None  # no wait named: the backoff and breaker handle it
    assert read_limits({"content-type": "application/json"}, 200) is None


def test_the_class_of_a_request_is_capped_by_its_tenant() -> None:
    """A header picks the class, either vocabulary; the tenant's default applies without
    one; max_priority caps both; a word outside both lists is refused."""
    plain = TenantConfig(name="t")
    trusted = TenantConfig(name="u", max_priority="high", default_priority="low")
    assert request_priority("interactive", plain) is Priority.DEFAULT
    assert request_priority("interactive", trusted) is Priority.INTERACTIVE
    assert request_priority("high", trusted) is Priority.INTERACTIVE
    assert request_priority(None, trusted) is Priority.BACKGROUND
    assert request_priority(None, plain) is Priority.DEFAULT
    with pytest.raises(InvalidRequest):
        request_priority("urgent", plain)


def test_a_keys_priority_is_its_requests_default_under_its_tenants_cap() -> None:
    """A key's ``priority`` replaces the tenant's default for requests that name none; a
    header still wins; the tenant's ``max_priority`` caps the key's default too; a word
    outside the lists is refused when the key is configured."""
    trusted = TenantConfig(name="u", max_priority="high", default_priority="low")
    plain = TenantConfig(name="t")
    urgent = KeyGrant.from_mapping("key", "key-1", {"priority": "interactive"})
    assert request_priority(None, trusted, urgent) is Priority.INTERACTIVE
    assert request_priority("background", trusted, urgent) is Priority.BACKGROUND
    assert request_priority(None, plain, urgent) is Priority.DEFAULT
    assert request_priority(None, trusted, KeyGrant(id="key-2")) is Priority.BACKGROUND
    assert urgent.describe() == {"priority": "interactive"}
    with pytest.raises(ValueError, match="priority"):
        KeyGrant.from_mapping("key", "key-3", {"priority": "urgent"})


def prepared_request(tenant: TenantConfig, deadline: float) -> Prepared:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}'
    model = ModelConfig(name="m", deployments=(Deployment(name="d", provider="p", model="m"),))
    return Prepared(
        data=body,
        request=decode_chat_request(body),
        model=model,
        request_id="r",
        deadline=deadline,
        key=None,
        directives=CacheDirectives(),
        tenant=tenant,
    )


async def test_a_tenant_over_its_limit_waits_for_its_window_when_it_resets_in_time() -> None:
    """Refused by its tenant's rpm with a reset 0.05 s away, a request waits and is admitted
    (the wait counted as queue time); with a reset past its wait bound it is refused at
    once with the tenant's 429."""
    loop = asyncio.get_running_loop()
    settings = AdmissionSettings(max_wait_s=5)
    admission = Admission(settings, [], max_in_flight=10, clock=loop.time)
    tenant = TenantConfig(name="t", rpm=1)
    refusals = [0.05]

    async def admit() -> None:
        if refusals:
            raise RateLimited("over", retry_after=refusals.pop(), headers={})

    soon = prepared_request(tenant, loop.time() + 60)
    await admission.tenant(soon, admit)
    assert soon.queued_s >= 0.05
    refusals.append(30.0)
    late = prepared_request(tenant, loop.time() + 60)
    with pytest.raises(RateLimited):
        await admission.tenant(late, admit)
    assert late.queued_s == 0


async def test_a_keys_own_limit_is_waited_for_and_counted_in_its_tenants_too() -> None:
    """A key's rpm (1) narrower than its tenant's (3): its second request is refused by the
    key's window, waits for it to reset and is admitted; its third is refused with the key's
    429 (the reset is past the wait bound). The key's requests count in the tenant's window:
    after the key's one in the new minute, the tenant has two requests left, not three."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    # the limiter's minute ends 0.5 s after the test starts
    limiter = RateLimiter(None, clock=lambda: 119.5 + loop.time() - started)
    meter = Meter({}, limiter, SpendLedger(None))
    admission = Admission(AdmissionSettings(max_wait_s=5), [], max_in_flight=10, clock=loop.time)
    tenant = TenantConfig(name="t", rpm=3)

    def request(grant: KeyGrant | None) -> Prepared:
        prepared = prepared_request(tenant, loop.time() + 60)
        prepared.grant = grant
        return prepared

    key = KeyGrant(id="key-1", rpm=1)
    first, second = request(key), request(key)
    await admission.tenant(first, lambda: meter.admit(first))
    await admission.tenant(second, lambda: meter.admit(second))  # the key's window resets
    assert first.queued_s == 0
    assert second.queued_s >= 0.5
    third = request(key)
    with pytest.raises(RateLimited, match="this key's"):
        await admission.tenant(third, lambda: meter.admit(third))
    plain = [request(None) for _ in range(3)]
    for prepared in plain[:2]:
        await admission.tenant(prepared, lambda p=prepared: meter.admit(p))
    with pytest.raises(RateLimited) as refused:
        await admission.tenant(plain[2], lambda: meter.admit(plain[2]))
    assert "this key's" not in str(refused.value)
