"""Talking to the broker over NATS from a producer: chat streams and the batch file store.

Imports only ``schemas`` of ours (no FastStream, Redis or tenacity), so services can use it.
"""

from __future__ import annotations

from edge_client.chat import ChatStreamError, stream_chat, stream_messages

__all__ = ["ChatStreamError", "stream_chat", "stream_messages"]
