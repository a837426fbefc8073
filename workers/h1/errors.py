"""What an upstream call raises when no HTTP answer comes back.

TransportError         refused, reset, closed before the answer ended, unreadable answer
 └── TransportTimeout  connecting, waiting for a pooled connection, or a read took too long
"""

from __future__ import annotations

__all__ = ["TransportError", "TransportTimeout"]


class TransportError(Exception):
    """The call got no (complete) HTTP answer."""


class TransportTimeout(TransportError):
    """A bounded wait of the call ran out."""
