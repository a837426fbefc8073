"""Sharing a deployment's limits among the brokers of a mesh: leases in a KV bucket.

Each limited deployment has one entry in the ``llm_edge_admission`` bucket, an
:class:`~schemas.admission.Allocation`: the limit of each pool (calls, requests, tokens) and
every broker's share of it (``held``), with what it would use (``want``). A broker uses no
more than its share, and changes the entry only by compare-and-set, keeping two rules:

* it **raises** its share only into what no broker holds (the sum never passes the limit),
  and only after the write succeeded;
* it **lowers** its share at once in process, but never below what it has in use (permits of
  calls still running, windowed permits still in their window): they go back as they free.
  While lower classes hold permits taken out of the larger share, it keeps the headroom of
  its higher classes too (:meth:`~broker.admission.gate.Gate.keep`) and lets the lower
  classes fit only the new share: an interactive request does not wait because a flood
  here borrowed a peer's idle share just before the peer needed it back.

Targets are a max-min fair split of each limit by the brokers' wants (a broker that wants
little gets it all, the rest is split evenly), so a busy broker holds most of a deployment
while the others are idle, and the shares even out when they all have work. Every broker
watches the bucket and rebalances when a peer's want changes, when its own demand changes
(a request waits, a call ends while it holds more than its target), and every ``lease_s / 3``
to renew its lease (``beat``). A share whose beat has not moved for ``lease_s``, as this
broker's clock measures it (no clocks are compared between hosts), belongs to a broker that
is gone and is removed. A broker that cannot renew its own share for most of ``lease_s``
stops using it (it may have been given away).

**Cost.** Nothing of this is on the request path: taking a permit is in process. A
rebalance is one KV write (about a millisecond of round trip, a fraction of that in CPU),
made only when a share or a want changes, at most every ``rebalance_s`` per deployment, or
every ``lease_s / 3`` to renew; an idle broker takes its entry out and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import api
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from broker.admission.gate import Gate
from broker.admission.settings import AdmissionSettings
from broker.admission.split import water_fill
from edge_runtime.jetstream import ensure_key_value
from schemas.admission import Allocation, Share
from schemas.jetstream import ADMISSION_BUCKET, admission_key

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from broker.admission.admit import Admission

__all__ = ["Allocator"]

log = logging.getLogger("llm_edge.broker")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Allocation)
#: Bound on one KV call (the next rebalance tries again).
KV_TIMEOUT_S = 2.0
#: Compare-and-set attempts of one rebalance before it waits for the next.
CAS_ATTEMPTS = 4
#: A broker stops using its shares when it has not renewed them for this part of lease_s.
STALE_PART = 0.8
#: How often the odd permits of a split change hands (seconds of the wall clock).
TURN_S = 1.0


async def settle_watch(watcher: Any) -> None:
    """Stop a KV watch (bounded)."""
    async with asyncio.timeout(KV_TIMEOUT_S):
        await watcher.stop()


class Allocator:
    """This broker's side of the shares.

    Args:
        nc: the broker's connection.
        admission: the gates whose pools it sizes.
        broker_id: this broker's name in the entries (unique per process).
        settings: lease and rebalance timings.
        replicas: the bucket's replicas.
        clock: monotonic seconds.
        brokers: how many brokers the mesh has now (this one included): without the bucket
            (no JetStream), each takes that part of every limit.
    """

    def __init__(
        self,
        nc: Client,
        admission: Admission,
        *,
        broker_id: str,
        settings: AdmissionSettings,
        replicas: int = 1,
        clock: Callable[[], float] = time.monotonic,
        brokers: Callable[[], int] = lambda: 1,
    ) -> None:
        self._brokers = brokers
        self._starting: asyncio.Task[None] | None = None
        self._failed_at = float("-inf")
        self._nc = nc
        self._admission = admission
        self.broker_id = broker_id
        self._settings = settings
        self._replicas = replicas
        self._clock = clock
        self._kv: KeyValue | None = None
        self._entries: dict[str, tuple[int, Allocation]] = {}  # key -> (revision, entry)
        self._beats: dict[tuple[str, str], tuple[int, float]] = {}  # (key, peer) -> seen
        self._renewed: dict[str, float] = {}  # key -> last successful write
        self._owed: dict[str, bool] = {}  # key -> holds permits in use past its share
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._watcher: Any = None
        self.writes = 0
        self.write_s = 0.0

    async def start(self) -> None:
        """Open the bucket, follow it, take first shares, keep rebalancing."""
        config = api.KeyValueConfig(bucket=ADMISSION_BUCKET, history=1, replicas=self._replicas)
        async with asyncio.timeout(KV_TIMEOUT_S * 3):
            self._kv = await ensure_key_value(self._nc.jetstream(), config)
            watcher = await self._kv.watch("alloc.>")
        self._watcher = watcher
        self._tasks = [
            asyncio.create_task(self._follow(watcher), name="admission-watch"),
            asyncio.create_task(self._loop(), name="admission-allocator"),
        ]
        self._admission.on_demand = self.nudge
        for name in list(self._admission.limits):
            with contextlib.suppress(NatsError, TimeoutError):
                await self._rebalance(name)

    async def stop(self) -> None:
        """Give every share back (bounded), stop."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._watcher is not None:
            with contextlib.suppress(Exception):  # (a closed connection has no consumer left)
                await settle_watch(self._watcher)
        for name in list(self._admission.limits):
            with contextlib.suppress(NatsError, TimeoutError, KeyError):
                await self._rebalance(name, leaving=True)

    def nudge(self, name: str) -> None:
        """Deployment ``name``'s demand here changed: rebalance it soon (opening the bucket
        first when this is the first limit this broker meets)."""
        if name not in self._admission.limits:
            return
        self._dirty.add(name)
        self._wake.set()
        idle = self._kv is None and self._starting is None
        if idle and self._clock() - self._failed_at >= self._settings.lease_s:
            self._starting = asyncio.create_task(self._start_late(), name="admission-open")

    async def _start_late(self) -> None:
        try:
            await self.start()
        except (NatsError, TimeoutError) as exc:
            self._failed_at = self._clock()
            log.warning("no %s bucket (%s): limits split evenly by broker", ADMISSION_BUCKET, exc)
            self.split_evenly()
        finally:
            self._starting = None

    def split_evenly(self) -> None:
        """Without the bucket: each broker takes its part of every limit (as many parts as
        brokers report statistics, rounded down), which keeps the mesh under the limit as
        long as they all see the same number of brokers (a limit smaller than the number
        of brokers then serves nobody: it needs the bucket)."""
        parts = max(1, self._brokers())
        for name, limits in self._admission.limits.items():
            gate = self._admission.gates[name]
            for index, whole in enumerate(limits.sizes()):
                gate.resize(index, whole // parts)

    async def _loop(self) -> None:
        renew_s = self._settings.lease_s / 3
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(renew_s):
                    await self._wake.wait()
            self._wake.clear()
            now = self._clock()
            due = {
                name
                for name in self._admission.limits
                if now - self._renewed.get(admission_key(name), float("-inf")) >= renew_s
            }
            owed = {name for name in self._admission.limits if self._owed.get(admission_key(name))}
            names, self._dirty = self._dirty | due | owed, set()
            for name in names:
                try:
                    await self._rebalance(name)
                except (NatsError, TimeoutError) as exc:
                    log.debug("rebalancing %s failed: %s", name, exc)
                    self._dirty.add(name)
            self._stale_check()
            await asyncio.sleep(self._settings.rebalance_s)

    def _stale_check(self) -> None:
        """Stop using shares this broker could not renew for most of a lease."""
        now = self._clock()
        for name in self._admission.limits:
            renewed = self._renewed.get(admission_key(name))
            if renewed is not None and now - renewed > STALE_PART * self._settings.lease_s:
                gate = self._admission.gates[name]
                for index in range(3):
                    gate.resize(index, 0)

    async def _follow(self, watcher: object) -> None:
        async for entry in watcher:  # type: ignore[attr-defined]
            if entry is None or entry.key is None:
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self._entries.pop(entry.key, None)
                continue
            try:
                allocation = _decoder.decode(entry.value)
            except msgspec.MsgspecError:
                continue
            self._entries[entry.key] = (entry.revision or 0, allocation)
            self._see(entry.key, allocation)
            name = self._name_of(entry.key)
            if name is not None and self._owes_change(name, allocation):
                self.nudge(name)

    def _name_of(self, key: str) -> str | None:
        for name in self._admission.limits:
            if admission_key(name) == key:
                return name
        return None

    def _see(self, key: str, allocation: Allocation) -> None:
        """Note when each peer's beat was last seen to move."""
        now = self._clock()
        for peer, share in allocation.brokers.items():
            seen = self._beats.get((key, peer))
            if seen is None or seen[0] != share.beat:
                self._beats[key, peer] = (share.beat, now)

    def _owes_change(self, name: str, allocation: Allocation) -> bool:
        """Whether a peer's change means this broker should move its share."""
        mine = allocation.brokers.get(self.broker_id)
        wants = self._wants(name)
        if mine is None:
            return any(wants)
        targets = self._targets(name, allocation, wants)
        return mine.held != targets

    def _wants(self, name: str) -> list[int]:
        gate = self._admission.gates[name]
        limits = self._admission.limits[name].sizes()
        return [min(gate.demand(i), limits[i]) if limits[i] else 0 for i in range(3)]

    def _alive(self, key: str, allocation: Allocation) -> dict[str, Share]:
        """The entry's shares whose brokers are alive (this one's included)."""
        now = self._clock()
        alive = {}
        for peer, share in allocation.brokers.items():
            seen = self._beats.get((key, peer))
            if peer == self.broker_id or seen is None or now - seen[1] < self._settings.lease_s:
                alive[peer] = share
        return alive

    def _targets(self, name: str, allocation: Allocation, wants: list[int]) -> list[int]:
        key = admission_key(name)
        limits = self._admission.limits[name].sizes()
        peers = self._alive(key, allocation)
        targets = []
        for index in range(3):
            split = {p: s.want[index] for p, s in peers.items() if p != self.broker_id}
            split[self.broker_id] = wants[index]
            turn = int(time.time() // TURN_S)
            targets.append(water_fill(limits[index], split, turn)[self.broker_id])
        return targets

    async def _rebalance(self, name: str, *, leaving: bool = False) -> None:
        """Move this broker's share of ``name`` toward its target (compare-and-set)."""
        kv = self._kv
        if kv is None:
            return
        key = admission_key(name)
        gate = self._admission.gates[name]
        for _ in range(CAS_ATTEMPTS):
            revision, allocation = await self._current(kv, key)
            wanted = self._next_share(name, gate, allocation, leaving=leaving)
            if wanted is None:
                return  # nothing to change, nothing due
            usable, entry, targets = wanted
            self._resize(gate, usable, lower_only=True, targets=targets)  # safe before the write
            try:
                new_revision = await self._write(kv, key, entry, revision)
            except KeyWrongLastSequenceError:
                self._entries.pop(key, None)  # a peer wrote first: read it again
                continue
            self._entries[key] = (new_revision, entry)
            self._renewed[key] = self._clock()
            # raising only once the write holds
            self._resize(gate, usable, lower_only=False, targets=targets)
            return

    async def _current(self, kv: KeyValue, key: str) -> tuple[int, Allocation]:
        known = self._entries.get(key)
        if known is not None:
            return known
        try:
            async with asyncio.timeout(KV_TIMEOUT_S):
                entry = await kv.get(key)
        except KeyNotFoundError:
            return 0, Allocation(limits=[0, 0, 0])
        if not entry.value:
            return entry.revision or 0, Allocation(limits=[0, 0, 0])
        allocation = _decoder.decode(entry.value)
        self._see(key, allocation)
        return entry.revision or 0, allocation

    def _next_share(
        self, name: str, gate: Gate, allocation: Allocation, *, leaving: bool
    ) -> tuple[list[int], Allocation, list[int]] | None:
        """The permits this broker may take from now on (per pool), the entry to write and
        the shares it moves toward, or ``None`` when neither moved and no renewal is due.

        The entry says what it holds: what it may take, or more while permits taken before
        are still in use (they go back as they free; meanwhile nobody else may count on
        them)."""
        key = admission_key(name)
        limits = list(self._admission.limits[name].sizes())
        peers = self._alive(key, allocation)
        mine = peers.pop(self.broker_id, None)
        wants = [0, 0, 0] if leaving else self._wants(name)
        targets = self._targets(name, allocation, wants)
        now = self._clock()
        usable, held = [], []
        for index in range(3):
            pool = gate.pools[index]
            current, in_use = 0, 0
            if pool is not None:
                pool.free(now)  # (windowed permits past their window leave first)
                current, in_use = pool.size, max(0, pool.in_use)
            taken = sum(s.held[index] for s in peers.values() if len(s.held) > index)
            size = targets[index]
            if size > current:  # more only out of what nobody holds
                size = max(current, min(size, limits[index] - taken))
            elif size < current:  # less only as the lower classes' permits free
                size = gate.keep(index, size)
            usable.append(size)
            held.append(max(size, in_use))
        keeping = any(u > t for u, t in zip(usable, targets, strict=True))
        self._owed[key] = held != usable or keeping
        renew_due = now - self._renewed.get(key, float("-inf")) >= self._settings.lease_s / 3
        idle = not any(held) and not any(wants)
        unchanged = mine is not None and mine.held == held and mine.want == wants
        if (unchanged and not renew_due) or (mine is None and idle):
            self._resize(gate, usable, lower_only=True, targets=targets)
            return None  # nothing to write (or nothing held and wanted: stay out)
        brokers = dict(peers)
        if not idle:
            beat = (mine.beat + 1) if mine is not None else 1
            brokers[self.broker_id] = Share(held=held, want=wants, beat=beat)
        return usable, Allocation(limits=limits, brokers=brokers), targets

    @staticmethod
    def _resize(gate: Gate, sizes: list[int], *, lower_only: bool, targets: list[int]) -> None:
        for index, size in enumerate(sizes):
            pool = gate.pools[index]
            if pool is not None and (size <= pool.size or not lower_only):
                gate.resize(index, size, targets[index])

    async def _write(self, kv: KeyValue, key: str, entry: Allocation, revision: int) -> int:
        started = time.perf_counter()
        data = _encoder.encode(entry)
        async with asyncio.timeout(KV_TIMEOUT_S):
            if revision:
                written = await kv.update(key, data, last=revision)
            else:  # (a peer that created it first makes this a wrong-last-sequence error)
                written = await kv.create(key, data)
        self.writes += 1
        self.write_s += time.perf_counter() - started
        return int(written)
