"""Talking to the broker over NATS from a producer: requests with retries, chat streams and
the batch file store.

Imports only ``schemas`` of ours (no FastStream, Redis or tenacity), so services can use it.
"""

from __future__ import annotations

from edge_client.chat import ChatStreamError, stream_chat, stream_messages
from edge_client.request import DEFAULT_RETRY, RetryPolicy, request

__all__ = [
    "DEFAULT_RETRY",
    "ChatStreamError",
    "RetryPolicy",
    "request",
    "stream_chat",
    "stream_messages",
]
