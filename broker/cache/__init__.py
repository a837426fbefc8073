"""The response cache wing: the key (``key``), the tiers (``l1`` in-process, ``l2`` shared on
Redis or NATS KV) and the read-through front with coalescing (``response``).

Modules are imported by name (``broker.cache.response``); this file re-exports nothing so
that ``broker.config`` can import a wing's settings without loading the wing.
"""
