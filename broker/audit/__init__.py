"""The audit wing: which admin actions are recorded and with what (``actions``), for whom and
whether one may be taken while the trail cannot be written (``trail``), how long the trail is
kept (``settings``).

Modules are imported by name (``broker.audit.trail``); this file re-exports nothing so that
``broker.config`` can import the wing's settings without loading the wing.
"""
