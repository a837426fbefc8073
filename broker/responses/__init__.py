"""The Responses API's wing: creating responses and continuing conversations (``api``:
reading a stored response's turns for ``previous_response_id``), the subjects naming a stored
one (``stored_api``), stored responses (``store``, ``sink``), background responses (queued by
``background``, run by ``runner`` through ``pipeline_run``, their statuses in ``states``,
those run at their upstream read by ``upstream`` and charged by ``charges``) and the kept
events of streamed ones (``events``, followed by ``follow``).

Modules are imported by name (``broker.responses.api``); this file re-exports nothing so
that ``broker.config`` can import the wing's settings without loading the wing.
"""
