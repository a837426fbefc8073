"""The front door: the ``llm-edge`` command and ``llm-edge up``, the local supervisor."""
