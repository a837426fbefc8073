"""The embeddings wing: ``llm.embeddings`` and ``POST /v1/embeddings``.

``call`` (the request inside the broker), ``prepare`` (bytes and headers to a call),
``resolve`` (which inputs the cache answers, one upstream call for the others), ``assemble``
(vectors to an answer and back), ``pipeline`` (the conductor). Vectors are cached per input by
:mod:`broker.cache.vectors`. Modules are imported by name; this file re-exports nothing.
"""
