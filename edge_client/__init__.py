"""Talking to the broker over NATS from a producer: the typed :class:`EdgeClient`, requests
with retries, chat streams, and batches and their files through the brokers' Batch API.

Imports only ``schemas`` of ours (no FastStream, Redis or tenacity), so services can use it.
"""

from __future__ import annotations

from edge_client.batches import Batches
from edge_client.chat import ChatStreamError, stream_chat, stream_messages
from edge_client.client import EdgeClient, MessageEvent
from edge_client.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    BudgetExceeded,
    ConflictError,
    DeadlineError,
    EdgeError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    StreamError,
    UnavailableError,
)
from edge_client.request import DEFAULT_RETRY, RetryPolicy, request
from edge_client.stream_handle import Stream

__all__ = [
    "DEFAULT_RETRY",
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "Batches",
    "BudgetExceeded",
    "ChatStreamError",
    "ConflictError",
    "DeadlineError",
    "EdgeClient",
    "EdgeError",
    "InternalServerError",
    "MessageEvent",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "Stream",
    "StreamError",
    "UnavailableError",
    "request",
    "stream_chat",
    "stream_messages",
]
