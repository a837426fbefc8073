"""JetStream assets with a replica count: streams, KV buckets and object stores.

Every asset the project creates goes through here, so ``[nats] replicas`` reaches all of
them. Replicas are only ever raised: an asset that exists with fewer is updated in place
(JetStream allows raising a stream's replicas by updating its config); one that exists with
more keeps them, so a process started with the default (the bridge, a CLI) never shrinks a
cluster's R3 asset to R1. When raising fails (the cluster is missing servers, the server is
not clustered) the asset keeps working as it is and a warning names the command that
migrates it by hand.

:func:`check_replicas` compares the count with the cluster the connection is on: a count
above the cluster's size could not place a single new asset, so a service refuses to start
with that error instead of failing on its first write.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from nats.aio.client import Client
from nats.errors import (
    ConnectionClosedError,
    ConnectionReconnectingError,
    NoRespondersError,
    OutboundBufferLimitError,
)
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext, api
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    NoStreamResponseError,
    ServiceUnavailableError,
)
from nats.js.errors import Error as JsError
from nats.js.errors import NotFoundError as JsNotFound
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

__all__ = [
    "JETSTREAM_UNAVAILABLE",
    "UNAVAILABLE_RETRY_AFTER_S",
    "ReplicasError",
    "check_replicas",
    "cluster_size",
    "ensure_key_value",
    "ensure_object_store",
    "ensure_stream",
    "raise_replicas",
]

log = logging.getLogger("llm_edge.jetstream")

#: What a JetStream call raises when JetStream cannot answer now, and a later try may work:
#: no server with JetStream (no responders), an asset without quorum after a server loss
#: (timeout, or JetStream's own 503), a publish nobody stored, a connection between servers.
JETSTREAM_UNAVAILABLE: tuple[type[Exception], ...] = (
    NatsTimeout,
    NoRespondersError,
    NoStreamResponseError,
    ServiceUnavailableError,
    ConnectionClosedError,
    ConnectionReconnectingError,
    OutboundBufferLimitError,
)
#: The ``Retry-After`` (seconds) of an answer refused because JetStream is unavailable: a
#: cluster elects new leaders within a few seconds of losing a server.
UNAVAILABLE_RETRY_AFTER_S = 2


class ReplicasError(ValueError):
    """More replicas are configured than the NATS cluster has servers."""

    def __init__(self, replicas: int, size: int, cluster: str | None) -> None:
        self.replicas, self.size, self.cluster = replicas, size, cluster
        where = (
            f"the NATS cluster {cluster!r} announces {size} server(s) up"
            if cluster
            else "the NATS server is not part of a cluster (one server)"
        )
        super().__init__(
            f"nats.replicas = {replicas}, but {where}: a JetStream asset needs one server per "
            f"replica. Lower [nats] replicas to at most {size}, or start the service once "
            "every server of the cluster is up"
        )


def cluster_size(nc: Client) -> int | None:
    """Servers of the cluster the connection is on, from the server's INFO: 1 when it is not
    clustered; ``None`` when a clustered server does not announce its peers (``no_advertise``).

    A server that is down is not announced: the count is of the servers up now.
    """
    info = nc._server_info  # nats-py keeps the connected server's INFO here
    if not info.get("cluster"):
        return 1
    urls = info.get("connect_urls") or []
    return len(urls) or None


def check_replicas(nc: Client, replicas: int) -> None:
    """Refuse a replica count the cluster cannot place.

    Raises:
        ReplicasError: ``replicas`` exceeds the servers of the cluster.
    """
    size = cluster_size(nc)
    if size is None:
        log.info("the NATS cluster does not announce its servers; replicas %d unchecked", replicas)
        return
    if replicas > size:
        raise ReplicasError(replicas, size, nc._server_info.get("cluster"))


async def raise_replicas(js: JetStreamContext, stream: str, replicas: int) -> None:
    """Raise an existing stream's replicas to ``replicas`` (never lowers them); on failure log
    how to migrate it by hand."""
    info = await js.stream_info(stream)
    current = info.config.num_replicas or 1
    if current >= replicas:
        return
    try:
        await js.update_stream(replace(info.config, num_replicas=replicas))
    except JsError as exc:
        log.warning(
            "JetStream stream %s has %d replica(s), [nats] replicas asks for %d, and raising "
            "it failed (%s); it keeps working with %d. Migrate it with: "
            "nats stream edit %s --replicas %d",
            *(stream, current, replicas, exc, current, stream, replicas),
        )
        return
    log.warning("JetStream stream %s raised from %d to %d replicas", stream, current, replicas)
    await _until_current(js, stream, replicas)


#: How long a raised stream may take to have its new copies caught up.
CATCH_UP_S = 15.0
_CATCH_UP_POLL_S = 0.05


def _settled(info: api.StreamInfo, replicas: int) -> bool:
    """A leader, and every follower current (``cluster.replicas`` lists the followers)."""
    cluster = info.cluster
    if cluster is None or not cluster.leader:
        return False
    return sum(bool(peer.current) for peer in cluster.replicas or []) >= replicas - 1


async def _until_current(js: JetStreamContext, stream: str, replicas: int) -> None:
    """Wait until the stream has a leader and ``replicas - 1`` current followers: until then,
    JetStream refuses a consumer on it ("insufficient resources")."""
    try:
        async with asyncio.timeout(CATCH_UP_S):
            while True:  # JetStream announces no such event: ask until it is so
                if _settled(await js.stream_info(stream), replicas):
                    return
                await asyncio.sleep(_CATCH_UP_POLL_S)
    except TimeoutError:
        log.warning("JetStream stream %s: its new copies are still catching up", stream)


async def ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    """Create the stream, or bring an existing one to ``config`` (its replicas only raised)."""
    assert config.name is not None
    wanted = config.num_replicas or 1
    try:
        await js.add_stream(config)
    except BadRequestError:  # it exists with other settings (an older version's, or R3)
        pass
    else:
        return
    current = (await js.stream_info(config.name)).config.num_replicas or 1
    await js.update_stream(replace(config, num_replicas=current))
    await raise_replicas(js, config.name, wanted)


async def ensure_key_value(js: JetStreamContext, config: api.KeyValueConfig) -> KeyValue:
    """Create the bucket, or bind to it and raise its replicas to ``config.replicas``."""
    try:
        return await js.create_key_value(config)
    except BadRequestError:  # it exists with other settings
        pass
    await raise_replicas(js, f"KV_{config.bucket}", config.replicas)
    return await js.key_value(config.bucket)


async def ensure_object_store(js: JetStreamContext, bucket: str, replicas: int) -> ObjectStore:
    """Bind to the object store (raising its replicas), or create it."""
    try:
        store = await js.object_store(bucket)
    except (BucketNotFoundError, JsNotFound):
        config = api.ObjectStoreConfig(bucket=bucket, replicas=replicas)
        return await js.create_object_store(bucket, config=config)
    await raise_replicas(js, f"OBJ_{bucket}", replicas)
    return store
