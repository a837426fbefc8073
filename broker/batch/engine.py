"""The batch engine a broker process runs: API, runner and lifecycle on shared resources."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from nats.aio.client import Client

from broker.batch.api import BatchApi
from broker.batch.lifecycle import Lifecycle
from broker.batch.offload import Offloader, Spend
from broker.batch.offload_plan import Planner
from broker.batch.runner import BatchRunner, LineHandler
from broker.batch.settings import BatchSettings
from broker.tenancy.tenants import KeyRing
from broker.upstream.deployments import ModelConfig
from edge_runtime.batch_store import BatchStore

__all__ = ["BatchEngine"]


class BatchEngine:
    """Start and stop the three parts together.

    Args:
        nc: NATS connection (with JetStream).
        handle: ``ChatPipeline.handle``: how a chat line is answered.
        settings: the ``[batch]`` table.
        interactive: whether interactive requests are arriving (the runner then yields).
        keys: the callers' keys (who owns a batch; whom its lines run as).
        replicas: copies of each JetStream resource (``[nats] replicas``).
        endpoints: how lines to other endpoints are answered, by ``url``.
        models: the configured models (which lines may run on a provider's Batch API).
        spend: adds the cost of lines run on a provider's Batch API to the tenant's spend.
    """

    def __init__(
        self,
        nc: Client,
        handle: LineHandler,
        settings: BatchSettings,
        *,
        interactive: Callable[[], bool] = lambda: False,
        keys: KeyRing | None = None,
        replicas: int = 1,
        endpoints: Mapping[str, LineHandler] | None = None,
        models: Mapping[str, ModelConfig] | None = None,
        spend: Spend | None = None,
    ) -> None:
        self._nc = nc
        self._models = dict(models or {})
        self._spend = spend
        self._endpoints = endpoints
        self._replicas = replicas
        self._keys = keys
        self._handle = handle
        self._settings = settings
        self._interactive = interactive

    async def start(self) -> None:
        """Open the resources, then serve, run and watch."""
        self.store = await BatchStore.open(self._nc, self._replicas)
        self.runner = BatchRunner(
            self._nc,
            self.store,
            self._handle,
            self._settings,
            keys=self._keys,
            interactive=self._interactive,
            endpoints=self._endpoints,
        )
        self.lifecycle = Lifecycle(
            self._nc,
            self.store,
            self._settings,
            self.runner.progress,
            interactive=self._interactive,
        )
        deployments = {d.name: d for m in self._models.values() for d in m.deployments}
        self.offloader = Offloader(
            self._nc,
            self.store,
            self._settings,
            deployments,
            self.lifecycle.publish_event,
            self._spend,
        )
        self.lifecycle.use_offload(
            Planner(self._settings, self._models, self._keys), self.offloader
        )
        self.api = BatchApi(self._nc, self.store, self.lifecycle, self._keys)
        await self.api.start()
        await self.runner.start()
        self.lifecycle.start()

    async def stop(self) -> None:
        """Stop taking work; lines in flight finish or are redelivered elsewhere."""
        await self.api.stop()
        await self.runner.stop()
        await self.lifecycle.stop()
