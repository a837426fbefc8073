"""Charging a background response that ran at its upstream (OpenAI's ``background: true``).

The pipeline meters the call that created it, whose answer is the upstream's queued
response (no usage: nothing to charge). The usage comes with the final response, read there
later (:mod:`broker.responses.upstream`): it is priced at the prices of the deployment that
took the create (kept in the stored response with the model it served it as), at the rates
of the service tier the answer names, and the tenant is charged (spend ledger and so its
budget, ``llm_edge_cost_usd_total``, ``llm_edge_tokens_total``), its tpm trued up from the
estimate counted when the response was accepted to the usage. The key that created it is
charged too when it has a tpm or budget of its own (:func:`key_fields` records it in the
stored response when the request is accepted): a key's budget holds for its background
responses as for its other requests.

Exactly once: the run prices the final response first (no side effect), stores it with its
final status and what it cost in one compare-and-set, and charges only when that write is
the one that won; a repeated run, a cancel or a retrieve finds it final and charges nothing.
The one window left is a broker killed between that write and the charge (one Redis round
trip): the response is then not charged at all, never twice.
"""

from __future__ import annotations

import logging
from typing import Any

from broker.request import Reply
from broker.tenancy.meter import Charge, KeyScope, Meter
from broker.tenancy.tenants import Caller, KeyRing
from schemas import headers
from schemas.responses import StoredResponse

__all__ = ["UpstreamCharges", "key_fields"]

log = logging.getLogger("llm_edge.responses")


def key_fields(caller: Caller) -> dict[str, Any]:
    """The stored response's fields naming the key of ``caller`` (none when it has no tpm
    or budget of its own)."""
    key = KeyScope.of(caller)
    if key is None:
        return {}
    return {"key": key.scope, "key_tpm": key.tpm, "key_budget_period": key.budget_period}


class UpstreamCharges:
    """Prices and charges background responses that ran at their upstream.

    Args:
        meter: prices answers and charges tenants.
        keys: the tenants (their budget periods).
    """

    def __init__(self, meter: Meter, keys: KeyRing) -> None:
        self._meter = meter
        self._keys = keys

    def price(self, polled: StoredResponse, reply: Reply) -> Charge | None:
        """What the final response ``reply`` read at the upstream costs, at the prices of
        the deployment that took its create (``None``: a failure, or a deployment not known
        here)."""
        if reply.status != 200 or not polled.deployment:
            return None
        return self._meter.price(Reply(200, reply.body, {headers.DEPLOYMENT: polled.deployment}))

    async def charge(self, finished: StoredResponse, charge: Charge) -> None:
        """Charge the response's tenant (once: called by the run whose final write won)."""
        tenant = self._keys.named(finished.tenant)
        try:
            key = None
            if finished.key:
                key = KeyScope(finished.key, finished.key_tpm, finished.key_budget_period)
            await self._meter.charge_tenant(
                tenant, finished.model, charge, estimate=finished.counted, key=key
            )
        except Exception:  # the response is final: no later run charges it
            log.exception(
                "background response of %s could not be charged (%.6f USD)",
                finished.tenant,
                charge.total,
            )
