"""The APIs a request body may speak, as named on the wire (``Llm-Api``, broker to worker).

A body travels in the API its caller spoke, all the way to the worker: the worker sends it to
an upstream of that API as it is (the model name aside), or translates it when the upstream
speaks another one (``workers.messages``). The broker never translates. Embeddings travel on
subjects of their own (``llm.embeddings``, then ``llm.provider.<name>.embeddings``), which
only workers whose adapter computes them serve: their subject says what they are.
"""

from __future__ import annotations

import enum

__all__ = ["Api"]


class Api(enum.StrEnum):
    """What a request body is, and so what its answer is."""

    #: An OpenAI chat-completions request (``llm.chat``): the default, sent without a header.
    CHAT = "chat"
    #: An Anthropic Messages request (``llm.messages``).
    MESSAGES = "messages"
    #: An Anthropic token-counting request (``llm.messages.count_tokens``).
    COUNT_TOKENS = "count_tokens"
    #: An OpenAI embeddings request (``llm.embeddings``): never streamed, answered whole.
    EMBEDDINGS = "embeddings"
    #: An OpenAI Responses request (``llm.responses``): passed through to an OpenAI upstream,
    #: translated to chat completions for the others (``workers.responses``).
    RESPONSES = "responses"
