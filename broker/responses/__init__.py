"""The Responses API's wing: stored responses (``store``), conversations (``api``: reading a
stored response's turns for ``previous_response_id``) and background responses
(``background``).

Modules are imported by name (``broker.responses.api``); this file re-exports nothing so
that ``broker.config`` can import the wing's settings without loading the wing.
"""
